"""Lets Krake 1.0.1's data classes be defined on Python 3.11 and later.

Python 3.11 made dataclasses refuse a default value whose class is not
hashable ("mutable default ... use default_factory"). Krake 1.0.1 has such
defaults, e.g. ``ApplicationStatus.container_health = ContainerHealth()``, so
``import krake.data.kubernetes`` fails there. scripts/compat copies this file
into the virtualenv's site-packages (with a .pth file that imports it) when it
has to use Python 3.11+: before dataclasses looks at a field, an unhashable
default that is an instance of one of Krake's own classes is turned into a
``default_factory`` returning a deep copy of it. That is what the older Pythons
did in effect (every instance got the default unless it was given a value),
and Krake's serializable.py handles ``default_factory`` fields (the schema's
default and ``Serializable.__init__``). Nothing else is touched.
"""

import copy
import dataclasses
import sys

if sys.version_info >= (3, 11) and not getattr(dataclasses, "_krake_compat", False):
    _original_get_field = dataclasses._get_field

    def _get_field(cls, a_name, *args, **kwargs):
        default = cls.__dict__.get(a_name, dataclasses.MISSING)
        if (
            default is not dataclasses.MISSING
            and not isinstance(default, dataclasses.Field)
            and type(default).__hash__ is None
            and type(default).__module__.startswith("krake.")
        ):

            def factory(default=default):
                return copy.deepcopy(default)

            setattr(cls, a_name, dataclasses.field(default_factory=factory))
        return _original_get_field(cls, a_name, *args, **kwargs)

    dataclasses._get_field = _get_field
    dataclasses._krake_compat = True
