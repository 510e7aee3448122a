"""Issue 26 item 9: what `bench` warned about on the terminal (plugin nodes timed on the CPU reference,
FP16 on the CPU) travels with `report`'s README and PNGs; `matrix` ends with the latency it measured."""
from __future__ import annotations

from pathlib import Path

from bench_fixtures import make_doc, make_run

from vitdeploy.bench import report

SWIN_REF = {"plugins": {"nodes": {"WindowAttention": 12}, "reference_executed": 12}, "fp16_on_cpu": True}


def _docs():
    plain = make_run(model="swin_t", medians=(1677.0,), batches=(1,))
    ref = make_run(model="swin_t", precision="fp16", medians=(2333.0,), batches=(1,), ident=SWIN_REF)
    return [("swin", make_doc(plain, ref))]


def test_report_readme_and_pngs_carry_the_caveats(tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    written = report.build(_docs(), out)
    md = (out / "README.md").read_text()
    assert ("swin_t ort/fp16 cpu: 12 plugin nodes (WindowAttention×12) timed on ONNX Runtime's CPU Python reference, "
            "not the plugin; FP16 graph on the CPU: casts and few FP16 kernels, not FP16 speed") in md
    rows = [line for line in md.splitlines() if line.startswith("| swin_t |")]
    assert "| ort/fp16 cpu ⚠ |" in rows[1] and "⚠" not in rows[0]  # only the run it concerns
    # the same report without the caveat: each PNG is taller by the caption, which is drawn in the image
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    docs = _docs()
    docs[0][1]["runs"][1]["identity"].update(plugins={"nodes": {}, "reference_executed": 0}, fp16_on_cpu=False)
    report.build(docs, plain_dir)
    from PIL import Image

    for p in (w for w in written if w.suffix == ".png"):
        with Image.open(p) as a, Image.open(plain_dir / p.name) as b:
            assert a.size[0] == b.size[0] and a.size[1] > b.size[1], p.name


def test_caption_text_is_in_the_figure():
    from vitdeploy.bench import plots

    items = report.entries(_docs())
    fig = plots.latency_figure("swin_t", items, report.caveat_lines(items))
    title = fig._suptitle.get_text()
    assert title.startswith("swin_t: latency per batch size") and "⚠ swin_t ort/fp16 cpu: 12 plugin nodes" in title


def test_matrix_ends_with_the_latency_table(tmp_path, capsys):
    from vitdeploy.commands import matrix as cmd

    doc = make_doc(*_docs()[0][1]["runs"])

    class Store:
        cells = {"a": {"id": "a", "status": "done"}, "b": {"id": "b", "status": "done"}}

        def merged(self):
            return doc

        def write_summary(self, **kw):
            return tmp_path / "summary.json"

    class Plan:
        cells = [1, 2]

    cmd._finish(Plan(), Store(), tmp_path, tmp_path / "bench.json", None, 0.0, False, None, Path("m.toml"), (), False)
    out = capsys.readouterr().out
    table = out[out.index("measured latency"):]
    assert "swin_t" in table and "ort/fp16 cpu ⚠" in table and " 1677 " in table and " 2333 " in table
    assert "plugins timed on the CPU reference" in table
    assert out.index("measured latency") < out.index("matrix 2 of 2 cells done")
