"""Run a Tcl script in a plain Tcl interpreter (Python's ``tkinter``) with every Vivado
command stubbed: checks a generated script's Tcl syntax and control flow where no Vivado is
installed (not Vivado semantics)."""

from __future__ import annotations

__all__ = ["run_tcl_stubbed"]


def run_tcl_stubbed(script, argv=(), run_dir=None, prelude=""):
    """Source ``script`` in a plain Tcl interpreter with every Vivado command stubbed.

    Unknown commands are recorded and return their last argument (so ``[get_bd_pins x/y]`` is
    ``x/y``). Checks Tcl syntax and control flow, not Vivado semantics. ``prelude``: more Tcl,
    evaluated after the stubs (to replace one).
    """
    import pytest          # a test helper: skip, with the reason, where Tcl is missing

    tkinter = pytest.importorskip("tkinter")
    try:
        tcl = tkinter.Tcl()
    except tkinter.TclError as e:                   # pragma: no cover - broken Tcl install
        pytest.skip(f"no Tcl interpreter: {e}")
    tcl.eval(r"""
        set ::calls {}
        proc unknown {args} { lappend ::calls $args; return [lindex $args end] }
        proc get_property {args} {
            lappend ::calls [linsert $args 0 get_property]
            switch -- [lindex $args 0] {
                PROGRESS { return "100%" }
                DIRECTORY { return $::fake_run_dir }
            }
            return ""
        }
    """)
    tcl.eval(prelude)
    tcl.call("set", "::argv", tuple(argv))
    tcl.call("set", "::fake_run_dir", str(run_dir or script.parent))
    tcl.call("source", str(script))
    return [tuple(tcl.splitlist(c)) for c in tcl.splitlist(tcl.eval("set ::calls"))]
