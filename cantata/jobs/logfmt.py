"""Old import path of `cantata.logfmt`; removed once no importer is left."""

from ..logfmt import kv  # noqa: F401
