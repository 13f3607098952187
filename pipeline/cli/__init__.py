"""`hmp`, the command-line door into the same library the stages call (as DVC's dvc/commands/ over dvc/repo/).

May import every other package; nothing imports it.
"""
