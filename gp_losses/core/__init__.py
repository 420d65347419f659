"""The leaf core: what every package of the project may import, and which imports none of them.

    errors     the GpLossesError hierarchy and its exit codes
    registry   name -> object registries with a `package.module:NAME` fallback
    options    `option()` fields and `build()`: checked dataclasses from plain data
"""
