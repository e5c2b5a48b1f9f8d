"""bench/graph_liveness.py: parsing MindSpore's kernel-graph IR and replaying a launch order, on a
small hand-written graph whose peak is worked out by hand."""
import os

from bench.graph_liveness import alive_at_peak, launch_order, parse_kernel_graph, replay, stage_of

# The format of MindSpore 2.10's graph_build_*.ir (lines shortened). Sizes: %1 2x4x8x8 float32 =
# 2048 B, %2 = 2048 B, %3 (view of %2), %4 2x4 float32 = 32 B, %5 int32 (2,) = 8 B.
IR = """# IR entry: @kernel_graph0
%para1_inputs0: <Tensor[Float32], (2, 3, 8, 8)> : [2, 3, 8, 8]
%para2_w: <Ref[Tensor[Float32]], (4, 3, 3, 3), ref_key=w, is_parameter>
subgraph @kernel_graph0() {
  %0(w) = Load(%para2_w, UMonad[U]) cnode_attrs: {checkpoint: Bool(1)}
      : (<Ref[Tensor[Float32]], (4, 3, 3, 3)>, <UMonad, NoShape>) -> (<Tensor[Float32], (4, 3, 3, 3)>)
      # Fullname with scope: (Default/network-Net/Load-op0)
  %1(conv) = Conv2D(%para1_inputs0, %0) {instance name: conv2d} primitive_attrs: {pad: (1, 1, 1, 1)}
      : (<Tensor[Float32], (2, 3, 8, 8)>, <Tensor[Float32], (4, 3, 3, 3)>) -> (<Tensor[Float32], (2, 4, 8, 8)>)
      # Fullname with scope: (Default/network-Net/backbone-ResNetFea/conv1-Conv2d/Conv2D-op0)
      # In file {root}/src/maskrcnn/resnet50.py:175, 31~41/        x = self.relu(self.bn1(self.conv1(x)))/
  %2(relu) = ReLU(%1)
      : (<Tensor[Float32], (2, 4, 8, 8)>) -> (<Tensor[Float32], (2, 4, 8, 8)>)
      # Fullname with scope: (Default/network-Net/backbone-ResNetFea/relu-ReLU/ReLU-op0)
  %3(flat) = Reshape(%2, (2, 256))
      : (<Tensor[Float32], (2, 4, 8, 8)>, <Tuple[Int64*2], TupleShape(NoShape, NoShape)>) -> (<Tensor[Float32], (2, 256)>)
      # Fullname with scope: (Default/network-Net/Reshape-op0)
  %4(mean) = ReduceMean(%1, (2, 3))
      : (<Tensor[Float32], (2, 4, 8, 8)>) -> (<Tensor[Float32], (2, 4)>)
      # Fullname with scope: (Gradients/Default/network-Net/backbone-ResNetFea/ReduceMean-op0)
  %5(arg) = Argmax(%3, %4)
      : (<Tensor[Float32], (2, 256)>, <Tensor[Float32], (2, 4)>) -> (<Tensor[Int32], (2)>)
      # Fullname with scope: (Default/network-Net/Argmax-op0)
  Return(%5)
}
"""


def write_graph(tmp_path):
    ir_dir = tmp_path / "ir"
    ir_dir.mkdir()
    root = str(tmp_path / "repo")
    (ir_dir / "graph_build_0_0001.ir").write_text(IR.replace("{root}", root))
    return str(ir_dir), root


def test_parse_sizes_inputs_scopes_and_source_lines(tmp_path):
    ir_dir, root = write_graph(tmp_path)
    nodes = parse_kernel_graph(os.path.join(ir_dir, "graph_build_0_0001.ir"), root)
    by_id = {n["id"]: n for n in nodes}
    assert [n["prim"] for n in nodes] == ["Load", "Conv2D", "ReLU", "Reshape", "ReduceMean", "Argmax"]
    assert by_id["1"]["bytes"] == 2 * 4 * 8 * 8 * 4 and by_id["5"]["bytes"] == 2 * 4
    assert by_id["1"]["inputs"] == ["0"]  # parameters are not allocated by the step
    assert by_id["5"]["inputs"] == ["3", "4"]
    assert by_id["1"]["where"] == os.path.join("src", "maskrcnn", "resnet50.py") + ":175"
    assert by_id["2"]["where"] == ""
    assert stage_of(by_id["1"]) == "forward backbone" and stage_of(by_id["4"]) == "backward backbone"
    assert stage_of(by_id["5"]) == "forward (top level)"


def test_replay_frees_after_last_use_and_views_keep_their_storage(tmp_path):
    ir_dir, root = write_graph(tmp_path)
    nodes = parse_kernel_graph(os.path.join(ir_dir, "graph_build_0_0001.ir"), root)
    # file order: conv (2048) -> relu (+2048 = 4096) -> mean (+32, conv freed after: its last use)
    # -> argmax (+8; relu, kept alive by its reshape, and mean freed after)
    peak, step, alive = replay(nodes)
    assert peak == 2048 + 2048 + 32 and nodes[step]["prim"] == "ReduceMean"
    assert set(alive) == {"1", "2", "4"}
    # launched as conv, mean, relu, argmax: conv is freed before relu is allocated
    task = tmp_path / "task.csv"
    task.write_text("time_stamp,task_name,node_name\n"
                    "0,a,Default/network-Net/backbone-ResNetFea/conv1-Conv2d/Conv2D-op0\n"
                    "1,b,Gradients/Default/network-Net/backbone-ResNetFea/ReduceMean-op0\n"
                    "2,c,Default/network-Net/backbone-ResNetFea/relu-ReLU/ReLU-op0\n"
                    "3,d,Default/network-Net/Argmax-op0\n"
                    "4,a,Default/network-Net/backbone-ResNetFea/conv1-Conv2d/Conv2D-op0\n")
    order = launch_order(nodes, str(task))
    assert [n["prim"] for n in order[:4]] == ["Conv2D", "ReduceMean", "ReLU", "Argmax"]
    assert replay(order)[0] == 2048 + 2048 + 32  # relu reads conv, so conv lives until relu ran
    peak, at, rows = alive_at_peak(ir_dir, str(task), root)
    assert peak == 4128 and at["prim"] == "ReLU"
    conv_line = os.path.join("src", "maskrcnn", "resnet50.py") + ":175"
    assert {r[:4] for r in rows} == {("forward backbone", conv_line, 2048, 1),
                                     ("forward backbone", "(no project line)", 2048, 1),
                                     ("backward backbone", "(no project line)", 32, 1)}
