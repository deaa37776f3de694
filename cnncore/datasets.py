"""Datasets: an IDX (MNIST format) reader, MNIST / Fashion-MNIST loaders and a shipped sample.

Nothing here downloads anything: the loaders look for the standard IDX files in a few places
and, when they are missing, raise :class:`FileNotFoundError` saying how to get them.

- :func:`load_idx` reads one IDX file (gzipped or not) and validates it strictly: the header
  must describe exactly the bytes present, checked *before* any large allocation.
- :func:`load_mnist` / :func:`load_fashion_mnist` return
  ``((x_train, y_train), (x_test, y_test))`` with ``x`` float32 of shape ``(N, 1, 28, 28)`` in
  ``[0, 1]`` and ``y`` int64.
- :func:`load_sample` returns a small stratified subset of Fashion-MNIST that ships inside the
  package (``cnncore/data/fashion_mnist_sample.npz``), so examples and tests run anywhere.
- :class:`ImageFolder` / :func:`load_image_folder` read your own images, one sub-folder per
  class (torchvision's convention; PNG, JPEG and the other formats Pillow reads; needs the
  ``images`` extra, i.e. Pillow).

Data source and license
-----------------------
Fashion-MNIST is by Zalando Research (https://github.com/zalandoresearch/fashion-mnist),
Copyright (c) 2017 Zalando SE, released under the MIT license; the notice ships as
``cnncore/data/FASHION_MNIST_LICENSE.txt``. The shipped sample was built once by
``tools/make_sample.py`` from the IDX files of Debian's ``dataset-fashion-mnist`` package.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._validation import _physical_memory

_Split = tuple[np.ndarray, np.ndarray]

__all__ = [
    "FASHION_MNIST_CLASS_NAMES",
    "IMG_EXTENSIONS",
    "ImageFolder",
    "MNIST_CLASS_NAMES",
    "is_image_folder",
    "load_fashion_mnist",
    "load_idx",
    "load_image_folder",
    "load_mnist",
    "load_sample",
]

#: Label ``i`` of MNIST is the digit ``MNIST_CLASS_NAMES[i]``.
MNIST_CLASS_NAMES: tuple[str, ...] = tuple(str(i) for i in range(10))

#: Label ``i`` of Fashion-MNIST (and of :func:`load_sample`) is ``FASHION_MNIST_CLASS_NAMES[i]``.
FASHION_MNIST_CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# IDX type code -> element dtype as stored (big-endian).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
# DEFLATE cannot expand data by more than ~1032:1 (a 258-byte match coded in 2 bits), so a
# gzip file of S bytes cannot decompress to more than 1032 * S bytes. A header that claims
# more is rejected before anything is read or allocated.
_DEFLATE_MAX_RATIO = 1032
_CHUNK = 1 << 22  # 4 MiB decompression chunks
_MAX_NDIM = 32  # NumPy 1.x's limit (2.x allows 64)


def _idx_error(path: str, what: str) -> ValueError:
    return ValueError(f"load_idx(): {path!r} is not a valid IDX file: {what}")


def _parse_header(path: str, read, where: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """Read and validate the IDX header with ``read(n)``; return (dtype, shape, header bytes)."""
    magic = read(4)
    if len(magic) == 0:
        raise _idx_error(path, f"{where}is empty")
    if len(magic) < 4:
        raise _idx_error(
            path, f"{where}has only {len(magic)} byte(s), too short for the 4-byte IDX magic"
        )
    if magic[0] != 0 or magic[1] != 0:
        raise _idx_error(
            path,
            f"bad magic bytes {magic[:2].hex(' ')} (an IDX file starts with two zero bytes); "
            "this looks like some other kind of file",
        )
    code, ndim = magic[2], magic[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise _idx_error(path, f"unknown data type code 0x{code:02X} (expected one of {known})")
    if ndim == 0:
        raise _idx_error(path, "the header declares ndim=0 (an IDX array needs >= 1 dimension)")
    raw_dims = read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise _idx_error(
            path,
            f"truncated header: ndim={ndim} needs {4 * ndim} bytes of dimensions but only "
            f"{len(raw_dims)} are present",
        )
    shape = tuple(int(d) for d in np.frombuffer(raw_dims, dtype=">u4"))
    return _IDX_DTYPES[code], shape, 4 + 4 * ndim


def _check_representable(path: str, shape: tuple[int, ...]) -> None:
    """Shapes whose size matches the data but that NumPy cannot create (too many dimensions,
    or an empty array whose other dimensions overflow)."""
    if len(shape) > _MAX_NDIM:
        raise _idx_error(
            path,
            f"the header declares ndim={len(shape)}; NumPy arrays have at "
            f"most {_MAX_NDIM} dimensions",
        )
    nonzero = 1
    for d in shape:
        nonzero *= max(d, 1)
    if nonzero > 2**62:
        raise _idx_error(path, f"the header declares shape {shape}, too large for NumPy")


def _data_size(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    count = 1
    for s in shape:
        count *= s
    return count * dtype.itemsize


def _check_memory(path: str, nbytes: int, shape: tuple[int, ...]) -> None:
    mem = _physical_memory()
    if mem is not None and nbytes > mem:
        raise _idx_error(
            path,
            f"the header declares shape {shape} ({nbytes} bytes of data), more than this "
            f"machine's {mem} bytes of memory",
        )


def _size_mismatch(
    path: str, shape: tuple[int, ...], expected: int, actual: int, exact: bool
) -> ValueError:
    if actual < expected:
        have = f"holds only {actual}" if exact else f"holds only {actual} (after decompression)"
        return _idx_error(
            path,
            f"truncated or corrupted: the header declares shape {shape}, i.e. {expected} bytes "
            f"of data, but the file {have}",
        )
    extra = f"{actual - expected} trailing byte(s)" if exact else "trailing bytes"
    return _idx_error(
        path,
        f"the file has {extra} after the {expected} bytes of data declared by the header "
        f"(shape {shape}); the header does not match the data",
    )


def _finish(buf, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.frombuffer(buf, dtype=dtype).reshape(shape)
    if dtype.byteorder == ">" and dtype.itemsize > 1:
        arr = arr.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return arr


def _load_raw(path: str, f) -> np.ndarray:
    file_size = os.fstat(f.fileno()).st_size
    dtype, shape, header = _parse_header(path, f.read, "")
    expected = _data_size(dtype, shape)
    actual = file_size - header
    if actual != expected:  # checked before allocating anything
        raise _size_mismatch(path, shape, expected, actual, exact=True)
    _check_memory(path, expected, shape)
    _check_representable(path, shape)
    buf = np.empty(expected, dtype=np.uint8)
    view = memoryview(buf)
    n = 0
    while n < expected:
        got = f.readinto(view[n:])
        if not got:  # the file shrank under us
            raise _size_mismatch(path, shape, expected, n, exact=True)
        n += got
    return _finish(buf, dtype, shape)


def _load_gzip(path: str, f) -> np.ndarray:
    file_size = os.fstat(f.fileno()).st_size
    try:
        with gzip.GzipFile(fileobj=f, mode="rb") as gz:
            dtype, shape, header = _parse_header(path, gz.read, "the decompressed data ")
            expected = _data_size(dtype, shape)
            bound = _DEFLATE_MAX_RATIO * file_size
            if header + expected > bound:
                raise _idx_error(
                    path,
                    f"the header declares shape {shape} ({expected} bytes of data), but a "
                    f"{file_size}-byte gzip file cannot decompress to more than {bound} bytes",
                )
            _check_memory(path, expected, shape)
            _check_representable(path, shape)
            # Bounded, chunked read of at most expected + 1 bytes: memory grows only with data
            # that is really there (a gzip bomb cannot make us allocate the declared size).
            buf = bytearray()
            remaining = expected + 1
            while remaining > 0:
                chunk = gz.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                buf += chunk
                remaining -= len(chunk)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise _idx_error(path, f"corrupted gzip data ({type(exc).__name__}: {exc})") from None
    if len(buf) != expected:
        raise _size_mismatch(path, shape, expected, len(buf), exact=False)
    return _finish(buf, dtype, shape)


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not.

    Parameters
    ----------
    path : str or path-like
        The file. Gzip compression is detected from the magic bytes ``1f 8b``, not from the
        file name.

    Returns
    -------
    ndarray
        The array, with the file's shape and dtype (uint8, int8, int16, int32, float32 or
        float64 for type codes 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E), in native byte order.

    Raises
    ------
    ValueError
        If the file is not a valid IDX file: empty or foreign file, bad magic, unknown type
        code, ``ndim == 0``, truncated header or data, trailing bytes, corrupted gzip stream.
        The message names the file and the problem.
    OSError
        If the file cannot be opened (``FileNotFoundError``, ``PermissionError``, ...).

    Notes
    -----
    An IDX file is: two zero bytes, a type code byte, ``ndim`` (one byte), then ``ndim``
    big-endian uint32 dimensions, then the elements, big-endian, in C order. The declared
    size must match the data exactly. For a raw file this is checked against the file size
    before anything is allocated; for a gzipped file the declared size is first checked
    against the most DEFLATE can expand the file, then at most ``size + 1`` bytes are
    decompressed, in chunks, so neither a crafted header nor a gzip bomb can exhaust memory.

    See Also
    --------
    load_mnist, load_fashion_mnist
    """
    path_str = os.fspath(path)
    if isinstance(path_str, bytes):
        path_str = os.fsdecode(path_str)
    with open(path_str, "rb") as f:
        head = f.read(2)
        f.seek(0)
        if head == _GZIP_MAGIC:
            return _load_gzip(path_str, f)
        return _load_raw(path_str, f)


# --------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST
# --------------------------------------------------------------------------------------------

_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

_DATASETS = {
    "mnist": dict(
        title="MNIST",
        func="load_mnist",
        system_dirs=(),
        urls="https://ossci-datasets.s3.amazonaws.com/mnist/",
        apt=None,
    ),
    "fashion-mnist": dict(
        title="Fashion-MNIST",
        func="load_fashion_mnist",
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        urls="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        apt=("dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist"),
    ),
}


def _search_dirs(name: str, path: str | os.PathLike | None) -> list[Path]:
    dirs: list[Path] = []
    if path is not None:
        p = Path(os.fspath(path)).expanduser()
        dirs += [p, p / name]
    env = os.environ.get("CNNCORE_DATA")
    if env:
        # The dataset's own subdirectory first: MNIST and Fashion-MNIST share file names.
        dirs += [Path(env).expanduser() / name, Path(env).expanduser()]
    dirs.append(Path.home() / ".cache" / "cnncore" / name)
    dirs += [Path(d) for d in _DATASETS[name]["system_dirs"]]
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def _find_files(d: Path) -> tuple[list[Path | None], bool]:
    found: list[Path | None] = []
    for base in _FILES:
        hit = None
        for candidate in (d / base, d / (base + ".gz")):
            if candidate.is_file():
                hit = candidate
                break
        found.append(hit)
    return found, all(f is not None for f in found)


def _not_found(name: str, dirs: Sequence[Path], partial: list[str]) -> FileNotFoundError:
    info = _DATASETS[name]
    title, func = info["title"], info["func"]
    files = ", ".join(f"{b}[.gz]" for b in _FILES)
    lines = [
        f"{func}(): could not find the {title} files ({files}).",
        "Searched, in order: " + ", ".join(str(d) for d in dirs) + ".",
    ]
    lines += partial
    lines.append("To get them:")
    if info["apt"]:
        package, where = info["apt"]
        lines.append(
            f"  - on Debian/Ubuntu: sudo apt install {package} "
            f"(installs them in {where}, found automatically); or"
        )
    cache = Path.home() / ".cache" / "cnncore" / name
    lines.append("  - download")
    lines += [f"      {info['urls']}{b}.gz" for b in _FILES]
    lines.append(
        f"    into {cache} (or $CNNCORE_DATA/{name}, or pass path=DIR); they may stay gzipped."
    )
    return FileNotFoundError("\n".join(lines))


def _load_split(func: str, images_path: Path, labels_path: Path) -> _Split:
    images = load_idx(images_path)
    labels = load_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{func}(): {str(images_path)!r} must hold uint8 images of shape (N, 28, 28). "
            f"Received: dtype={images.dtype}, shape={images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{func}(): {str(labels_path)!r} must hold a 1-D uint8 label vector. "
            f"Received: dtype={labels.dtype}, shape={labels.shape}"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{func}(): image and label counts differ: {images.shape[0]} images in "
            f"{str(images_path)!r} but {labels.shape[0]} labels in {str(labels_path)!r}"
        )
    if labels.size and int(labels.max()) > 9:
        raise ValueError(
            f"{func}(): labels must be in [0, 9]. Received: a label {int(labels.max())} in "
            f"{str(labels_path)!r}"
        )
    return _to_float_images(images), labels.astype(np.int64)


def _to_float_images(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32).reshape(images.shape[0], 1, 28, 28)
    np.divide(x, np.float32(255), out=x)
    return x


def _load_dataset(name: str, path: str | os.PathLike | None) -> tuple[_Split, _Split]:
    func = _DATASETS[name]["func"]
    dirs = _search_dirs(name, path)
    partial: list[str] = []
    for d in dirs:
        files, complete = _find_files(d)
        if complete:
            train = _load_split(func, files[0], files[1])
            test = _load_split(func, files[2], files[3])
            return train, test
        if any(files):
            missing = ", ".join(b for b, f in zip(_FILES, files, strict=True) if f is None)
            partial.append(f"{d} has some of the files but is missing: {missing}.")
    raise _not_found(name, dirs, partial)


def load_mnist(path: str | os.PathLike | None = None) -> tuple[_Split, _Split]:
    """Load MNIST (handwritten digits) from local IDX files.

    Parameters
    ----------
    path : str or path-like, optional
        A directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each possibly ``.gz``).
        Searched first; then ``$CNNCORE_DATA/mnist``, ``$CNNCORE_DATA`` and
        ``~/.cache/cnncore/mnist``.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        ``x`` float32 of shape ``(N, 1, 28, 28)`` scaled to ``[0, 1]``; ``y`` int64 of shape
        ``(N,)`` with labels 0..9 (:data:`MNIST_CLASS_NAMES`). N is 60000 and 10000.

    Raises
    ------
    FileNotFoundError
        If no directory holds all four files; the message says where to get them.
    ValueError
        If a file is corrupted or image and label counts differ.

    See Also
    --------
    load_fashion_mnist, load_sample, load_idx
    """
    return _load_dataset("mnist", path)


def load_fashion_mnist(path: str | os.PathLike | None = None) -> tuple[_Split, _Split]:
    """Load Fashion-MNIST (Zalando article images) from local IDX files.

    Parameters
    ----------
    path : str or path-like, optional
        A directory holding the four standard IDX files (same names as MNIST, possibly
        ``.gz``). Searched first; then ``$CNNCORE_DATA/fashion-mnist``, ``$CNNCORE_DATA``,
        ``~/.cache/cnncore/fashion-mnist`` and ``/usr/share/datasets/fashion-mnist`` (where
        Debian's ``dataset-fashion-mnist`` package installs them).

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        ``x`` float32 of shape ``(N, 1, 28, 28)`` scaled to ``[0, 1]``; ``y`` int64 of shape
        ``(N,)`` with labels 0..9 (:data:`FASHION_MNIST_CLASS_NAMES`). N is 60000 and 10000.

    Raises
    ------
    FileNotFoundError
        If no directory holds all four files; the message says how to get them.
    ValueError
        If a file is corrupted or image and label counts differ.

    See Also
    --------
    load_mnist, load_sample, load_idx
    """
    return _load_dataset("fashion-mnist", path)


# --------------------------------------------------------------------------------------------
# Shipped sample
# --------------------------------------------------------------------------------------------

_SAMPLE_FILE = "fashion_mnist_sample.npz"


def load_sample() -> tuple[_Split, _Split]:
    """A small real dataset shipped with cnncore: a stratified subset of Fashion-MNIST.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        ``x`` float32 of shape ``(N, 1, 28, 28)`` scaled to ``[0, 1]``; ``y`` int64 labels
        0..9 (:data:`FASHION_MNIST_CLASS_NAMES`). Stratified: 5,780 training images (578 per
        class) and 1,000 test images (100 per class), drawn with a fixed seed by
        ``tools/make_sample.py``; the images keep their original Fashion-MNIST order.

    Notes
    -----
    Stored as ``cnncore/data/fashion_mnist_sample.npz`` (uint8, compressed, loaded with
    ``allow_pickle=False``). It also records the indices of the chosen images in the original
    Fashion-MNIST splits (``train_indices``, ``test_indices``). Fashion-MNIST is Copyright (c)
    2017 Zalando SE, MIT license (``cnncore/data/FASHION_MNIST_LICENSE.txt``).

    See Also
    --------
    load_fashion_mnist
    """
    from importlib import resources

    ref = resources.files("cnncore").joinpath("data", _SAMPLE_FILE)
    with ref.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
        x_train, y_train = npz["x_train"], npz["y_train"]
        x_test, y_test = npz["x_test"], npz["y_test"]
    return (
        (_to_float_images(x_train), y_train.astype(np.int64)),
        (_to_float_images(x_test), y_test.astype(np.int64)),
    )


# --------------------------------------------------------------------------------------------
# Your own images: one sub-folder per class (torchvision's ImageFolder convention)
# --------------------------------------------------------------------------------------------

#: File name endings (case-insensitive) read as images, as torchvision's ``IMG_EXTENSIONS``.
IMG_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)

_COLORS = ("auto", "grayscale", "rgb")


def _require_pillow(func: str):
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            f"{func}() needs Pillow to read images: pip install 'cnncore[images]' "
            "(or pip install pillow)"
        ) from None
    return Image


def _is_image_file(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS) and not name.startswith(".")


def _class_dirs(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def _image_files(class_dir: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames.sort()
        out += [Path(dirpath) / f for f in sorted(filenames) if _is_image_file(f)]
    return out


def _has_image(class_dir: Path) -> bool:
    for _, _, filenames in os.walk(class_dir, followlinks=True):
        if any(_is_image_file(f) for f in filenames):
            return True
    return False


def is_image_folder(root: str | os.PathLike) -> bool:
    """Whether ``root`` is a directory with at least one class sub-folder holding an image
    file (by extension; nothing is decoded) -- what :class:`ImageFolder` reads."""
    path = Path(os.fspath(root)).expanduser()
    if not path.is_dir():
        return False
    return any(_has_image(path / c) for c in _class_dirs(path))


def _check_size(size, func: str) -> tuple[int, int] | None:
    if size is None:
        return None
    from ._validation import to_pair

    h, w = to_pair(size, "size", func, min_value=1)
    if h > 16384 or w > 16384:
        raise ValueError(
            f"{func}(): size must be at most 16384 pixels per side. Received: size={size!r}"
        )
    return h, w


class ImageFolder:
    """Images in class sub-folders, read with Pillow: ``root/<class>/**/<image>``.

    torchvision's ``ImageFolder`` convention: every non-hidden sub-folder of ``root`` is a
    class, the classes sorted by name get the labels 0, 1, 2, ...; the images are the files
    under each class folder (sub-folders included, sorted) whose names end in one of
    :data:`IMG_EXTENSIONS`; other files are ignored.

    Parameters
    ----------
    root : str or path-like
        The folder holding one sub-folder per class.
    size : int or (height, width), optional
        Resize every image to this size (an int gives a square; bilinear, antialiased when
        shrinking: Pillow's ``Image.resize``). Without it, all images must have one size.
    color : {'auto', 'grayscale', 'rgb'}, default 'auto'
        ``'grayscale'``: 1 channel; ``'rgb'``: 3 channels (alpha dropped, palettes
        expanded, as torchvision's loader does); ``'auto'``: 1 channel if every image is
        grayscale (Pillow modes ``1``, ``L``, ``LA``, ``I;16``), else 3.
    dtype : float32 or float64, default float32
    allow_empty : bool, default False
        Accept class folders without images (as torchvision's ``allow_empty``).

    Attributes
    ----------
    classes : list of str
        The class names (sub-folder names), sorted; ``classes[label]`` names a label.
    class_to_idx : dict of str -> int
    samples : list of (str, int)
        Every image's path and label, in order.
    targets : list of int
        The labels, in order.
    channels : int
        1 or 3 (the resolved ``color``).

    Notes
    -----
    ``folder[i]`` returns ``(image, label)``: ``image`` a ``(C, H, W)`` array of ``dtype``
    scaled to [0, 1] (8-bit images divided by 255, 16-bit ones by 65535), ``label`` an int.
    :meth:`load` (or :func:`load_image_folder`) reads them all into ``(N, C, H, W)``, ready
    for ``fit``. Files Pillow cannot decode raise ValueError naming the file.

    Requires Pillow (``pip install 'cnncore[images]'``).

    See Also
    --------
    load_image_folder
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        size: int | tuple[int, int] | None = None,
        color: str = "auto",
        dtype: type | np.dtype = np.float32,
        allow_empty: bool = False,
    ) -> None:
        func = "ImageFolder"
        from ._validation import FLOAT_DTYPES, check_bool, check_choice

        self.size = _check_size(size, func)
        check_choice(color, "color", func, _COLORS)
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            self.dtype = None
        if self.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"{func}(): dtype must be float32 or float64. Received: dtype={dtype!r}"
            )
        allow_empty = check_bool(allow_empty, "allow_empty", func)
        self.root = Path(os.fspath(root)).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"{func}(): root must be an existing directory. Received: root={str(root)!r}"
            )
        self.classes: list[str] = _class_dirs(self.root)
        if not self.classes:
            raise FileNotFoundError(
                f"{func}(): {str(self.root)!r} has no class sub-folders. Put the images of each "
                f"class in a folder of their own: root/<class name>/<image>.png"
            )
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = []
        empty = []
        for c in self.classes:
            files = _image_files(self.root / c)
            if not files:
                empty.append(c)
            self.samples += [(str(f), self.class_to_idx[c]) for f in files]
        if empty and not allow_empty:
            more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
            raise FileNotFoundError(
                f"{func}(): found no image file ({', '.join(IMG_EXTENSIONS)}) for the "
                f"class(es) {', '.join(empty[:5])}{more} in {str(self.root)!r}. Received: "
                f"root={str(root)!r} (pass allow_empty=True to accept empty classes)"
            )
        if not self.samples:
            raise FileNotFoundError(f"{func}(): no image files under {str(self.root)!r}")
        self.targets = [t for _, t in self.samples]
        self._Image = _require_pillow(func)
        self.channels = self._resolve_channels(color)
        self._shape: tuple[int, int] | None = self.size

    # -- reading ---------------------------------------------------------------------------
    def _open(self, path: str):
        Image = self._Image
        try:
            return Image.open(path)
        except (OSError, Image.DecompressionBombError, ValueError) as exc:
            raise ValueError(
                f"ImageFolder: cannot read {path!r} as an image ({type(exc).__name__}: {exc})"
            ) from None

    def _resolve_channels(self, color: str) -> int:
        if color != "auto":
            return 1 if color == "grayscale" else 3
        for path, _ in self.samples:
            with self._open(path) as im:
                if im.mode not in ("1", "L", "LA") and not im.mode.startswith("I;16"):
                    return 3
        return 1

    def _decode(self, path: str) -> np.ndarray:
        """One image as ``(C, H, W)`` of ``self.dtype`` in [0, 1]."""
        Image = self._Image
        with self._open(path) as im:
            try:
                if im.mode.startswith("I;16") or im.mode == "I":
                    a = np.asarray(im, dtype=np.float64) / 65535.0
                    if self.channels == 3:
                        a = np.repeat(a[..., None], 3, axis=-1)
                    img = None
                else:
                    img = im.convert("L" if self.channels == 1 else "RGB")
                    a = None
                if self.size is not None:
                    h, w = self.size
                    if img is not None:
                        img = img.resize((w, h), Image.BILINEAR)
                    else:
                        chans = a if a.ndim == 3 else a[..., None]
                        a = np.stack(
                            [
                                np.asarray(
                                    Image.fromarray(chans[..., k].astype(np.float32), "F").resize(
                                        (w, h), Image.BILINEAR
                                    )
                                )
                                for k in range(chans.shape[-1])
                            ],
                            axis=-1,
                        )
                        a = a if self.channels == 3 else a[..., 0]
                if img is not None:
                    a = np.asarray(img, dtype=np.float64) / 255.0
            except (OSError, ValueError, SyntaxError) as exc:
                raise ValueError(
                    f"ImageFolder: cannot decode {path!r} ({type(exc).__name__}: {exc})"
                ) from None
        a = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
        return np.clip(a, 0.0, 1.0).astype(self.dtype)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        path, label = self.samples[index]
        return self._decode(path), label

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """Every image and label: ``x`` of shape ``(N, C, H, W)`` (``dtype``, in [0, 1]) and
        ``y`` int64 of shape ``(N,)``. Raises ValueError naming the first image whose size
        differs from the first one's when no ``size`` was given."""
        from ._validation import check_numel

        first = self._decode(self.samples[0][0])
        shape = (len(self.samples), *first.shape)
        check_numel(shape, "images", "ImageFolder.load", self.dtype.itemsize)
        x = np.empty(shape, dtype=self.dtype)
        x[0] = first
        for i, (path, _) in enumerate(self.samples[1:], start=1):
            a = self._decode(path)
            if a.shape != first.shape:
                raise ValueError(
                    f"ImageFolder.load(): images differ in size: {self.samples[0][0]!r} is "
                    f"{first.shape[1]}x{first.shape[2]} but {path!r} is {a.shape[1]}x"
                    f"{a.shape[2]} (height x width). Pass size=(height, width) to resize them "
                    f"all. Received: size=None"
                )
            x[i] = a
        return x, np.asarray(self.targets, dtype=np.int64)

    def __repr__(self) -> str:
        return (
            f"ImageFolder(root={str(self.root)!r}, {len(self)} images, "
            f"{len(self.classes)} classes, channels={self.channels}, size={self.size})"
        )


def load_image_folder(
    root: str | os.PathLike,
    size: int | tuple[int, int] | None = None,
    *,
    color: str = "auto",
    dtype: type | np.dtype = np.float32,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a folder of images with one sub-folder per class (see :class:`ImageFolder`).

    Parameters
    ----------
    root : str or path-like
        ``root/<class name>/<image file>``; classes sorted by name get labels 0, 1, ...
    size : int or (height, width), optional
        Resize every image (bilinear); required when the images differ in size.
    color : {'auto', 'grayscale', 'rgb'}, default 'auto'
    dtype : float32 or float64, default float32

    Returns
    -------
    x : ndarray of shape (N, C, H, W)
        The images scaled to [0, 1]; C is 1 (grayscale) or 3 (RGB).
    y : ndarray of shape (N,), int64
        The labels.
    classes : list of str
        ``classes[label]`` is the sub-folder name of a label.

    Examples
    --------
    >>> x, y, classes = load_image_folder("pets/train", size=64)  # doctest: +SKIP
    >>> model.fit(x, y, optimizer="adam", loss="cross_entropy")  # doctest: +SKIP

    See Also
    --------
    ImageFolder, load_sample
    """
    folder = ImageFolder(root, size=size, color=color, dtype=dtype)
    x, y = folder.load()
    return x, y, list(folder.classes)
