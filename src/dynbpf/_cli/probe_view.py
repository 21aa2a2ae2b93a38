"""Human-readable rendering of the capability report."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dynbpf._probes import Report, Support

_TITLES = {
    "program_types": "Program types",
    "map_types": "Map types",
    "btf": "BTF",
    "kernel_features": "Verifier and runtime",
    "attach": "Attach kinds",
}


def _mark(s: Support) -> str:
    return "[green]yes[/green]" if s.supported else "[red]no[/red]"


def render(report: Report, *, show_helpers: bool = False, console: Console | None = None) -> None:
    console = console or Console()
    k = report.kernel
    console.print(f"[bold]Kernel[/bold] {k['release']} ({k['machine']}) {k['version']}")
    for name, section in report.sections().items():
        table = Table(title=_TITLES[name], title_justify="left", show_lines=False, expand=True)
        table.add_column("capability", no_wrap=True)
        table.add_column("", no_wrap=True)
        table.add_column("how it was decided", overflow="fold")
        for key, support in section.items():
            table.add_row(key, _mark(support), support.how)
        console.print(table)
    if report.helpers:
        table = Table(title="Helpers per program type", title_justify="left", expand=True)
        table.add_column("program type", no_wrap=True)
        table.add_column("available", justify="right")
        table.add_column("refused", justify="right")
        if show_helpers:
            table.add_column("available helpers", overflow="fold")
        for pt, helpers in report.helpers.items():
            yes = [h for h, s in helpers.items() if s.supported]
            row = [pt, str(len(yes)), str(len(helpers) - len(yes))]
            if show_helpers:
                row.append(", ".join(yes))
            table.add_row(*row)
        console.print(table)
        skipped = [pt for pt, s in report.program_types.items() if s.supported and pt not in report.helpers]
        if skipped:
            console.print(
                f"helpers not probed for {', '.join(skipped)}: no program of the type loads without a "
                "specific target (see its program type row)"
            )
