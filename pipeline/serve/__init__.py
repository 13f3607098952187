"""`hmp serve`: a resident door over the library (pipeline.answers): a JSON API and a web page for count, fit and
FLOPs, with torch and transformers imported once and answers kept by what they depend on."""
