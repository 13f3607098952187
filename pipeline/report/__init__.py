"""The report, as sections: one module per section (its text and its figure together), the renderer that
assembles them into Markdown and a self-contained HTML page, the shared text and plotting helpers, the plot
data `dvc plots` draws and its offline page.

May import pipeline.core, pipeline.formats, pipeline.model and pipeline.cost.
"""
