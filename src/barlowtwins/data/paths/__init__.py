"""The data paths of pretraining, one module each (`data.pipeline` builds them and documents their contract):

- `base`: `DataPath`, the contract and what every path shares (multi-crop, progressive sizes, skip notes);
- `memory`: `MemoryPath`, in-memory data sets augmented batched on the device;
- `files`: what the two paths for files share: the loader and its step sampler, the worker-side file list with the
  replacement rule for unreadable files, the ``/dev/shm`` sizing of the loader's prefetch;
- `cpu`: `CpuPath` and its worker data set (both views made whole with PIL);
- `device`: `DevicePath` and its worker side (bytes read by the workers, JPEGs decoded batched on the device).
"""
