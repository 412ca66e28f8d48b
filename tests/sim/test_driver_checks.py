"""Driver checks that need no hardware: the per-phase buffer check (shared with
``sparseforge schedule``: gen/schedule.check_tensors) and the chunked-WG routing rule."""
import numpy as np
import pytest

from sparseforge.gen.config import preset
from sparseforge.gen.network import NetworkError
from sparseforge.sim.host.driver import Driver, PacketCodec


def _driver(cfg):
    d = object.__new__(Driver)          # the checks read only the codec's configuration
    d.codec = PacketCodec(cfg)
    return d


def test_check_fits_refuses_each_tensor_by_its_buffer():
    cfg = preset("tiny")
    d = _driver(cfg)
    ok = {"x": cfg.act_mem_elems, "w": cfg.wgt_mem_elems, "mask": 10**9,
          "out": cfg.out_mem_elems}
    d.check_fits("fp", ok)               # exactly full fits; the packed mask is not checked
    for name, field, phase in (("x", "act_mem_elems", "fp"), ("dy", "grad_mem_elems", "bp"),
                               ("w", "wgt_mem_elems", "bp"), ("out", "out_mem_elems", "wg")):
        sizes = {name: getattr(cfg, field) + 1}
        with pytest.raises(NetworkError) as e:
            d.check_fits(phase, sizes)
        msg = str(e.value)
        shown = {"fp": "y", "bp": "dx", "wg": "dW"}[phase] if name == "out" else name
        assert msg.startswith(f"run_phase({phase!r}): tensor {shown} has "
                              f"{getattr(cfg, field) + 1} elements > {field}="
                              f"{getattr(cfg, field)}"), msg
        assert "configuration tiny" in msg and "\n" not in msg


def test_chunked_wg_follows_wg_chunks():
    cfg = preset("tiny")
    d = _driver(cfg)
    depth, C = cfg.act_buf_depth, cfg.pe_cols
    plane = 8 * 8
    fit = depth // plane                  # whole planes per column that fit the scratchpad
    x_ok = np.zeros((1, fit * C, 8, 8), np.int64)
    x_big = np.zeros((1, fit * C + 1, 8, 8), np.int64)
    assert not d._chunked_wg("wg", {"x": x_ok})
    assert d._chunked_wg("wg", {"x": x_big})
    assert not d._chunked_wg("fp", {"x": x_big})


def _table_driver(cfg):
    d = _driver(cfg)
    d.replay = d.codec.has_table
    d._forget_table()
    d.replay_calls = d.table_writes = 0
    return d


def _headers(packets):
    from sparseforge.hdl.wire import split_header
    return [(split_header(p[0])[0], len(p)) for p in packets]


def test_replay_writes_once_then_calls():
    """``Driver._dp_packets``: a phase's step packets and commands go into the command table
    the first time (SETW, the entries, the call that ends the job), the same sequence later is
    one two-word call; a sequence that does not fit restarts the table at entry 0 and forgets
    what was written before; other head packets, debug reads and a core without a table send
    the commands as before."""
    from sparseforge.hdl import dataplane as dpm
    from sparseforge.hdl.cmd_table import call_layout
    from sparseforge.sim.testkit.amaranth_streams import unpack
    cfg = preset("tiny").replace(cmd_table_depth=8)
    d = _table_driver(cfg)
    ids = d.codec.dest_id
    cmd = lambda n: [{"kind": dpm.CMD_DESC, "desc": {"buf": 0, "base": 64 * k, "length": 4,  # noqa: E731
                                                      "addr": 4096 * k}} for k in range(n)]
    step = [d.codec.step_packet(3)]
    first = d._dp_packets(step, cmd(2))
    assert [h for h, _ in _headers(first)] == [ids["dpcall"], ids["dptab"], ids["dpcall"]]
    assert len(first[1]) == 1 + 3 * d.codec.dests[ids["dptab"]].words
    call = unpack(call_layout(), first[2][1])
    assert (call["op"], call["idx"], call["count"], call["end"]) == (0, 0, 3, 1)
    again = d._dp_packets(step, cmd(2))
    assert again == [first[2]] and len(again[0]) == 2
    assert (d.replay_calls, d.table_writes) == (2, 1)
    # another sequence at entry 3; one that does not fit (7 + 3 > 8) restarts the table at
    # entry 0, forgetting what the host wrote before (the first sequence is written again)
    second = d._dp_packets([], cmd(4))
    assert unpack(call_layout(), second[-1][1])["idx"] == 3
    third = d._dp_packets([], cmd(3))
    assert unpack(call_layout(), third[-1][1])["idx"] == 0 and len(third) == 3
    assert tuple(d.codec.table_entries(step, cmd(2))) not in d._table
    assert d._dp_packets([], cmd(3)) == [third[-1]]
    assert unpack(call_layout(), d._dp_packets(step, cmd(2))[-1][1])["idx"] == 3
    # not from the table: a CTRL head packet, replay=False, a sequence longer than the table
    end = [ids["end"]]
    for head, cmds, kw in (([d.codec.ctrl_packet()], cmd(1), {}), ([], cmd(1), {"replay": False}),
                           ([], cmd(9), {})):
        pk = d._dp_packets(head, cmds, **kw)
        assert [h for h, _ in _headers(pk)][-2:] == [ids["dp"]] + end
    # a core without a table
    d0 = _table_driver(preset("tiny").replace(cmd_table_depth=0))
    assert not d0.replay and "dpcall" not in d0.codec.dest_id
    assert [h for h, _ in _headers(d0._dp_packets(step, cmd(1)))] == \
        [ids["step"], ids["dp"]] + end
