"""A restricted unpickler for the official CIFAR python pickles.

`pickle.load` runs whatever callable a pickle names (`os.system` included). The CIFAR files need only three
globals: NumPy's array reconstructor, `numpy.ndarray` and `numpy.dtype`; labels and names are plain lists,
bytes and ints. `RestrictedUnpickler` resolves those three and refuses every other global with a
`pickle.UnpicklingError` naming it, before anything is called.

Before any unpickling, `check_pickle_structure` walks the opcodes (pickletools.genops, which executes
nothing) and simulates the stack to bound nesting depth, container sizes and the number of objects: a few KB
that nest a key 100 000 deep would otherwise crash CPython (recursion in hash/repr) or, with many small
objects, exhaust memory. torch_io's unpickler uses the same check.
"""
from __future__ import annotations

import io
import pickle
import pickletools

import numpy as np

try:  # NumPy >= 2: the implementation lives in numpy._core; numpy.core is a deprecated alias
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct

# (module, name) as written in the pickle -> the object it may resolve to. The CIFAR files were written by
# Python 2 with NumPy 1.x (numpy.core); pickles written by NumPy 2 say numpy._core.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


MAX_DEPTH = 64              # nesting of containers/objects; CIFAR and state_dict pickles need < 10
MAX_CONTAINER = 1_000_000   # items in one list/tuple/dict/set (CIFAR: 10 000 labels per batch)
MAX_OBJECTS = 2_000_000     # objects built in total
_MAX_WORK = 20_000_000      # depth-propagation steps (bounds the time of the check itself)


class _Node:
    __slots__ = ("depth", "size", "parents")

    def __init__(self, children=()):
        self.depth, self.size, self.parents = 1, 0, []
        for c in children:
            self.depth = max(self.depth, c.depth + 1)


_MARK = object()


def check_pickle_structure(data: bytes, max_depth: int = MAX_DEPTH, max_container: int = MAX_CONTAINER,
                           max_objects: int = MAX_OBJECTS) -> None:
    """Raise pickle.UnpicklingError if the pickle in `data` nests deeper than `max_depth`, puts more than
    `max_container` items in one container, builds more than `max_objects` objects, or is malformed.

    Nothing is executed: pickletools.genops only decodes opcodes. Each object on the simulated stack carries its
    nesting depth; adding an item to a container (APPEND(S), SETITEM(S), ADDITEMS, BUILD) updates the depth of
    the container and of everything that already holds it (so building a chain top-down through the memo is
    caught too). Self-referencing containers count as too deep (neither CIFAR nor a state_dict has any).
    """
    stack, memo = [], {}
    count = work = 0

    def new(children=()):
        nonlocal count
        count += 1
        if count > max_objects:
            raise pickle.UnpicklingError(f"the pickle builds more than {max_objects} objects; refusing "
                                         f"(not a CIFAR batch or a state_dict)")
        node = _Node(children)
        for c in children:
            c.parents.append(node)
        if node.depth > max_depth:
            raise pickle.UnpicklingError(f"the pickle nests objects more than {max_depth} deep; refusing (it "
                                         f"could crash Python; the file is crafted or corrupt)")
        return node

    def add(container, items):
        nonlocal work
        container.size += len(items)
        if container.size > max_container:
            raise pickle.UnpicklingError(f"a container in the pickle holds more than {max_container} items; "
                                         f"refusing")
        todo = []
        for c in items:
            c.parents.append(container)
            todo.append((container, c.depth + 1))
        while todo:
            node, d = todo.pop()
            work += 1
            if work > _MAX_WORK:
                raise pickle.UnpicklingError("the pickle's structure is too tangled to check; refusing")
            if d <= node.depth:
                continue
            if d > max_depth:
                raise pickle.UnpicklingError(f"the pickle nests objects more than {max_depth} deep (or a "
                                             f"container holds itself); refusing")
            node.depth = d
            todo.extend((p, d + 1) for p in node.parents)

    def pop(n=1):
        if len(stack) < n or any(x is _MARK for x in stack[len(stack) - n:]):
            raise pickle.UnpicklingError("malformed pickle (stack underflow)")
        out = stack[len(stack) - n:]
        del stack[len(stack) - n:]
        return out

    def pop_mark():
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is _MARK:
                items = stack[i + 1:]
                del stack[i:]
                return items
        raise pickle.UnpicklingError("malformed pickle (no MARK)")

    def top():
        if not stack or stack[-1] is _MARK:
            raise pickle.UnpicklingError("malformed pickle (empty stack)")
        return stack[-1]

    try:
        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                pop(1)
                break
            if name == "MARK":
                stack.append(_MARK)
            elif name == "POP":
                pop(1)
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(top())
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = top()
            elif name == "MEMOIZE":
                memo[len(memo)] = top()
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in memo:
                    raise pickle.UnpicklingError(f"malformed pickle (memo key {arg} missing)")
                stack.append(memo[arg])
            elif name in ("TUPLE", "LIST", "DICT", "FROZENSET"):
                items = pop_mark()
                if len(items) > max_container:
                    raise pickle.UnpicklingError(f"a container in the pickle holds more than {max_container} "
                                                 f"items; refusing")
                stack.append(new(items))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                stack.append(new(pop(int(name[-1]))))
            elif name == "APPEND":
                (item,) = pop(1)
                add(top(), [item])
            elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
                items = pop_mark()
                add(top(), items)
            elif name == "SETITEM":
                items = pop(2)
                add(top(), items)
            elif name == "BUILD":
                items = pop(1)
                add(top(), items)
            elif name in ("OBJ", "INST"):
                stack.append(new(pop_mark()))
            elif name in ("READONLY_BUFFER",):
                continue
            else:  # generic: pop what the opcode consumes, push what it makes (children = the popped items)
                before = [x for x in op.stack_before if x is not pickletools.markobject]
                if any(x is pickletools.markobject for x in op.stack_before):
                    raise pickle.UnpicklingError(f"unsupported opcode {name}")
                popped = pop(len(before)) if before else []
                for _ in op.stack_after:
                    stack.append(new(popped))
        else:
            raise pickle.UnpicklingError("truncated pickle (no STOP opcode)")
    except pickle.UnpicklingError:
        raise
    except Exception as exc:  # genops on garbage: unknown opcode, truncated argument, bad encoding, ...
        raise pickle.UnpicklingError(f"malformed pickle ({type(exc).__name__}: {exc})") from None


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only `ALLOWED_GLOBALS`; anything else -> pickle.UnpicklingError."""

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load the global {module}.{name}: the CIFAR pickles need only "
                f"{sorted(m + '.' + n for m, n in ALLOWED_GLOBALS)}. The file is not an official CIFAR "
                f"file (or is corrupted); delete it and download again.") from None


def restricted_load(file, encoding: str = "bytes"):
    """Unpickle from a binary file object or bytes with `RestrictedUnpickler`.

    encoding="bytes" (the official page's Python 3 recipe) keeps the Python 2 `str` keys as bytes, e.g.
    b"data", b"labels".
    """
    data = bytes(file) if isinstance(file, (bytes, bytearray)) else file.read()
    check_pickle_structure(data)      # depth, container sizes, object count: before anything is built
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
    except pickle.UnpicklingError:
        raise
    except Exception as exc:   # wrong arguments to an allowed callable, a huge declared array, garbled bytes
        raise pickle.UnpicklingError(f"the pickle is malformed ({type(exc).__name__}: {exc}); the file is not an "
                                     f"official CIFAR file or is corrupted: delete it and download again") from None
