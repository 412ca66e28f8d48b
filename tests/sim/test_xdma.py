"""The XDMA transport (sim/host/xdma.py) on stand-in device files: the register BAR and the
card memory through mmap, the H2C/C2H streams, range checks, missing devices, a C2H wait
that gives up. (The driver over the transport on a simulated card: tests/sim/test_fastsim.py
::test_xdma_transport_runs_the_step.)"""

import asyncio
import struct

import pytest

from sparseforge.sim.host.xdma import XdmaDevice, XdmaTransport, device_paths


@pytest.fixture
def devdir(tmp_path):
    p = device_paths(0, tmp_path)
    p["user"].write_bytes(bytes(4096))
    p["bypass"].write_bytes(bytes(1 << 16))
    p["h2c_0"].write_bytes(b"")
    p["c2h_0"].write_bytes(b"\x01\x00\x00\x00\x02\x00\x00\x00")
    return tmp_path


def test_device_paths():
    p = device_paths(2)
    assert str(p["user"]) == "/dev/xdma2_user" and str(p["h2c_0"]) == "/dev/xdma2_h2c_0"
    assert str(p["c2h_0"]) == "/dev/xdma2_c2h_0" and str(p["bypass"]) == "/dev/xdma2_bypass"
    assert str(p["events_0"]) == "/dev/xdma2_events_0"


def test_xdma_device_on_files(devdir):
    dev = XdmaDevice(0, root=devdir, user_bytes=4096, card_bytes=1 << 16)
    # registers: 32-bit little-endian words at byte offsets of the BAR
    dev.reg_write(0x10, 0xDEADBEEF)
    assert dev.reg_read(0x10) == 0xDEADBEEF
    # card memory through the bypass BAR
    dev.mem_write(0x100, b"abcd")
    assert dev.mem_read(0x100, 4) == b"abcd"
    with pytest.raises(ValueError, match="register access .* outside its 4096 bytes"):
        dev.reg_read(4094)
    with pytest.raises(ValueError, match="card memory access .* outside its 65536 bytes"):
        dev.mem_write((1 << 16) - 2, b"xyzw")
    dev.h2c_write(b"\x05\x00\x00\x00")
    assert dev.c2h_read() == b"\x01\x00\x00\x00\x02\x00\x00\x00"
    with pytest.raises(FileNotFoundError, match="events_0 missing"):
        dev.wait_irq()
    dev.close()
    assert struct.unpack_from("<I", (devdir / "xdma0_user").read_bytes(), 0x10)[0] == \
        0xDEADBEEF
    assert (devdir / "xdma0_bypass").read_bytes()[0x100:0x104] == b"abcd"
    assert (devdir / "xdma0_h2c_0").read_bytes() == b"\x05\x00\x00\x00"


def test_xdma_wait_irq_is_bounded(devdir):
    """The user interrupt's events device: a wait with a timeout gives up with
    ``TimeoutError`` (never a hang), and returns the driver's event count when it fires; the
    transport offers the interrupt only where the events device exists."""
    import os
    dev = XdmaDevice(0, root=devdir, card_bytes=1 << 16)
    assert not XdmaTransport(dev, recv_timeout_s=0.2).has_irq     # no events_0 file
    r, w = os.pipe()                      # stands in for /dev/xdma0_events_0
    dev.events = r
    assert XdmaTransport(dev, recv_timeout_s=0.2).has_irq
    with pytest.raises(TimeoutError, match="did not fire in 0.05 s"):
        dev.wait_irq(0.05)
    os.write(w, struct.pack("<I", 3))
    assert dev.wait_irq(1.0) == 3
    os.close(w)
    dev.close()


def test_xdma_transport_on_files(devdir):
    dev = XdmaDevice(0, root=devdir, card_bytes=1 << 16)
    tr = XdmaTransport(dev, recv_timeout_s=0.2)

    async def go():
        await tr.axil.write_dword(0x20, 7)
        assert await tr.axil.read_dword(0x20) == 7
        await tr.src.send(b"\x09\x00\x00\x00")
        frame = await tr.sink.recv()            # the C2H reader thread took the packet
        assert frame.tdata == b"\x01\x00\x00\x00\x02\x00\x00\x00"
        with pytest.raises(TimeoutError, match="no C2H packet in 0.2 s"):
            await tr.sink.recv()                # nothing more: bounded wait, no hang
    asyncio.run(go())
    tr.ram.write(8, b"\x11\x22")
    assert tr.ram.read(8, 2) == b"\x11\x22"
    assert tr.now_cycles() > 0
    dev.close()


def test_xdma_missing_devices(tmp_path):
    with pytest.raises(FileNotFoundError, match="xdma3_user.*is the xdma driver loaded"):
        XdmaDevice(3, root=tmp_path)
