"""The DVC stages, one thin module per stage, named as the stage (`python -m pipeline.stages.count` runs stage
count): main() reads params.yaml, calls the library, and writes exactly the outputs dvc.yaml declares.

May import every library package; nothing imports a stage.
"""
