"""plots_page: an HTML template for `dvc plots show` and `dvc plots diff` whose page draws with the network off.

    python -m stages.plots_page --out .dvc/plots_page.html
    dvc plots show --html-template .dvc/plots_page.html
    dvc config --local plots.html_template plots_page.html   # once: then every `dvc plots show` / `diff` uses it

DVC's own page loads Vega, Vega-Lite and vega-embed from a CDN, so offline every Vega chart is blank. This
template inlines the three libraries instead (the bundle vl-convert-python ships, the Vega-Lite version the
report's figures are drawn with, stages.reporting.figures) and leaves out DVC's `{scripts}` placeholder, where
DVC would put its CDN tags. The file is about 1 MB and generated, not tracked: `make plots-page` writes it.
"""

from __future__ import annotations

from pathlib import Path

import typer

from stages.contracts.errors import user_errors
from stages.contracts.runtime import Command

app = Command()

PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>DVC plots (offline)</title>
<script type="text/javascript">
BUNDLE
</script>
<style>
body { font-family: sans-serif; }
table { border-spacing: 15px; }
</style>
</head>
<body>
<p style="color:#555">Drawn offline: VERSIONS, inlined by <code>python -m stages.plots_page</code>.</p>
{plot_divs}
</body>
</html>
"""


def page() -> str:
    """The template's text: DVC fills `{plot_divs}` (and `{refresh_tag}`); the libraries are inlined."""
    import vl_convert

    from stages.reporting.figures import VEGA_LITE

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE)
    # a literal "</script" inside the bundle would end the script element early; "<\/" is the same JavaScript
    bundle = bundle.replace("</script", "<\\/script")
    for placeholder in ("{plot_divs}", "{scripts}", "{refresh_tag}"):
        # DVC replaces its placeholders anywhere in the page: one inside the bundle would corrupt it
        if placeholder in bundle:
            raise RuntimeError(f"the JavaScript bundle contains DVC's placeholder {placeholder}")
    versions = (f"Vega {vl_convert.get_vega_version()}, Vega-Lite {VEGA_LITE}, "
                f"vega-embed {vl_convert.get_vega_embed_version()}")
    head, tail = PAGE.split("BUNDLE")
    return head + bundle + tail.replace("VERSIONS", versions)


@app.command()
def main(
    out: Path = typer.Option(..., help="Output HTML template (e.g. .dvc/plots_page.html) for `dvc plots show "
                                       "--html-template` or the plots.html_template setting."),
) -> None:
    """Write an HTML template for `dvc plots show` and `dvc plots diff` with Vega inlined, so the page draws
    offline."""
    from stages.contracts.io import atomic_path, check_outputs

    with user_errors():
        check_outputs(writes=[out], reads=[])
        text = page()
        with atomic_path(out, kind="file") as tmp:
            tmp.write_text(text, encoding="utf-8")
    typer.echo(f"{out}: written ({len(text) // 1024} KiB); dvc plots show --html-template {out}")


if __name__ == "__main__":
    app()
