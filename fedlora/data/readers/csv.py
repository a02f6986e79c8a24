"""'csv': `data.path` (a file, a glob or a list of files) through the packaged `datasets` builder."""
from fedlora.data.readers import READERS, Reader
from fedlora.data.readers.files import read_files


def _read(cfg):
  return read_files("csv", cfg)


READERS.register("csv")(Reader(_read))
