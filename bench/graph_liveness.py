"""Which tensors of a compiled MindSpore graph are alive at its peak, in the order the runtime ran it.

Two records of one compiled step, both written by MindSpore itself:
- the kernel graph (``MS_DEV_SAVE_GRAPHS=1``, ``graph_build_*.ir``): every node's inputs, output
  shapes, scope and the source lines it came from;
- the runtime's launch order (``MS_ALLOC_CONF=memory_tracker:True``, ``task.csv``): on CPU the
  actors run as their inputs become ready, which is not the order of the IR file (weight gradients
  and optimizer updates run inside the backward pass, not after it).
Replaying the launch order, a node's output is allocated when it runs and freed after its last
consumer ran; views (reshape, tuple items, loads, monads) share their input's memory. The peak of
that replay is a lower bound of what the runtime holds: it leaves out kernel workspaces, the
allocator's rounding and free-but-unreturned blocks, and what monad nodes keep alive.
"""
import collections
import csv
import glob
import os
import re

_NODE = re.compile(r"^\s+%(\d+)\([^)]*\) = (?:PrimFunc_)?([A-Za-z_][A-Za-z0-9_]*)\((.*)$")
_OUTPUT = re.compile(r"<Tensor\[(\w+)\], \(([\d, ]*)\)>")
_TRACE = re.compile(r"# In file (.+?):(\d+)")
VIEWS = {"Reshape", "TupleGetItem", "Load", "ExpandDims", "Squeeze", "Depend", "MakeTuple", "UpdateState",
         "Flatten", "Return"}
_BYTES = {"Float32": 4, "Int32": 4, "Float16": 2, "BFloat16": 2, "Bool": 1, "UInt8": 1, "Int8": 1, "Int64": 8,
          "Float64": 8}


def _call_arguments(text):
    """The node ids among the arguments of ``Prim(...`` (text after the opening parenthesis)."""
    depth = 1
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if depth == 0:
            return re.findall(r"%(\d+)\b", text[:i])
    return re.findall(r"%(\d+)\b", text)


def parse_kernel_graph(path, root):
    """Nodes of a ``graph_build_*.ir`` file in file order: dicts with id, prim, inputs (node ids;
    parameters left out: they are not allocated by the step), bytes (all outputs), shape (of the
    last output), scope and where (the innermost ``root/src`` line, "" if none)."""
    nodes, node = [], None
    src = os.path.join(root, "src") + os.sep
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            match = _NODE.match(line)
            if match:
                node = {"id": match.group(1), "prim": match.group(2), "inputs": _call_arguments(match.group(3)),
                        "bytes": None, "shape": "", "scope": "", "where": ""}
                nodes.append(node)
                continue
            if node is None:
                continue
            text = line.strip()
            if node["bytes"] is None and text.startswith(": (<") and "->" in text:
                node["bytes"] = 0
                for dtype, dims in _OUTPUT.findall(text.split("->", 1)[1]):
                    count = 1
                    for dim in filter(None, (d.strip() for d in dims.split(","))):
                        count *= int(dim)
                    node["bytes"] += count * _BYTES.get(dtype, 4)
                    node["shape"] = f"{dtype} ({dims})"
            elif text.startswith("# Fullname with scope: ("):
                node["scope"] = text[len("# Fullname with scope: ("):-1]
            trace = _TRACE.search(line)
            if trace and trace.group(1).startswith(src):
                node["where"] = f"{os.path.relpath(trace.group(1), root)}:{trace.group(2)}"
    for node in nodes:
        node["bytes"] = node["bytes"] or 0
    return nodes


def launch_order(nodes, task_csv):
    """``nodes`` reordered as the runtime first launched them (``task.csv``'s node_name is the
    node's scope); nodes never launched (views) keep their file order after the launched ones."""
    by_scope = collections.defaultdict(list)
    for node in nodes:
        by_scope[node["scope"]].append(node)
    seen, order = set(), []
    with open(task_csv, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            for node in by_scope.get(row.get("node_name", ""), ()):
                if node["id"] not in seen:
                    seen.add(node["id"])
                    order.append(node)
    return order + [n for n in nodes if n["id"] not in seen]


def replay(nodes):
    """(peak bytes, index of the node at the peak, {node id: bytes} alive then) of running ``nodes``
    in this order, each output freed after its last non-view consumer."""
    by_id = {n["id"]: n for n in nodes}

    def storage(node_id):
        node = by_id.get(node_id)
        while node is not None and node["prim"] in VIEWS and node["inputs"] and node["inputs"][0] in by_id:
            node = by_id[node["inputs"][0]]
        return node

    last_use = {}
    for step, node in enumerate(nodes):
        if node["prim"] in VIEWS:
            continue
        for node_id in node["inputs"]:
            owner = storage(node_id)
            if owner is not None:
                last_use[owner["id"]] = step
    alive, held, peak, peak_step, peak_alive = {}, 0, 0, 0, {}
    for step, node in enumerate(nodes):
        if node["prim"] not in VIEWS:
            alive[node["id"]] = node["bytes"]
            held += node["bytes"]
        if held > peak:
            peak, peak_step, peak_alive = held, step, dict(alive)
        for node_id in set(node["inputs"]) | {node["id"]}:
            owner = storage(node_id)
            if owner is not None and owner["id"] in alive and last_use.get(owner["id"], step) <= step:
                held -= alive.pop(owner["id"])
    return peak, peak_step, peak_alive


def stage_of(node):
    """A readable stage name from a node's scope: backward or forward, and the top cell below the
    network ("backbone", "fpn_ncek", "rpn_with_loss", ...), or "optimizer"."""
    scope = node["scope"]
    if "optimizer" in scope:
        return "optimizer"
    direction = "backward" if scope.startswith("Gradients/") else "forward"
    # cells appear as name-ClassName, kernels as Prim-opN
    cells = [name for name, kind in re.findall(r"/([A-Za-z0-9_]+)-([A-Za-z0-9_]+)", scope)
             if not re.fullmatch(r"op\d+", kind)]
    names = [c for c in cells if c not in ("network", "net")]
    return f"{direction} {names[0] if names else '(top level)'}"


def alive_at_peak(ir_dir, task_csv, root):
    """(peak bytes, the node at the peak, rows) for the kernel graph in ``ir_dir`` replayed in the
    launch order of ``task_csv``; rows: (stage, source line, bytes alive, count, largest shape),
    largest first."""
    paths = sorted(glob.glob(os.path.join(ir_dir, "graph_build_*.ir")), key=os.path.getsize)
    if not paths:
        raise FileNotFoundError(f"no graph_build_*.ir in {ir_dir}")
    nodes = launch_order(parse_kernel_graph(paths[-1], root), task_csv)
    peak, step, alive = replay(nodes)
    by_id = {n["id"]: n for n in nodes}
    groups = {}
    for node_id, size in alive.items():
        node = by_id[node_id]
        key = (stage_of(node), node["where"] or "(no project line)")
        total, count, largest = groups.get(key, (0, 0, (0, "")))
        groups[key] = (total + size, count + 1, max(largest, (size, node["shape"])))
    rows = sorted(((k[0], k[1], v[0], v[1], v[2][1]) for k, v in groups.items()), key=lambda r: -r[2])
    return peak, nodes[step], rows
