"""'disk': a `Dataset.save_to_disk` folder (`data.path`); of a DatasetDict, its 'train' split."""
from fedlora.data.readers import READERS, Reader
from fedlora.data.readers.files import read_files


def _read(cfg):
  return read_files("disk", cfg)


READERS.register("disk")(Reader(_read))
