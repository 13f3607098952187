"""The questions a door asks, each one library call with a typed answer: the count of a source (count.py), the
memory plan of a model (fit.py), a model added to the sweep (add.py), and what a source names (source.py).

The doors (cli/, stages/, a server) parse their input, call these, and render the answer; none holds library logic
or another door's helpers. May import every library package below it (core ... report), never a door.
"""
