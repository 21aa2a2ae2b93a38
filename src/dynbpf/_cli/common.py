"""What the lifecycle commands share: ``-j/--json``, tables, and what an error exits with.

Tables have no borders and upper-case headers, like ``ps``: they read the
same on a terminal, in a pipe and in a file, and rich keeps them within
the terminal's width (80 columns in a pipe) by wrapping the long columns
(paths, descriptions) and never the names.

Exit status: 0 done; 1 the kernel or the system refused (a verifier
rejection, an attach that failed); 2 the command line is wrong (an
unreadable object, an unknown program or map, a value that does not fit
its type), in which case nothing was loaded.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from dynbpf.errors import DynbpfError, FeatureMapError, NotFound, ObjectFormatError, OptionError

if TYPE_CHECKING:
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

#: the default root of what dynbpf pins: ``load --pin`` suggests a directory below it, the listings walk it
PIN_ROOT = "/sys/fs/bpf/dynbpf"


class Failure(click.ClickException):
    """The kernel or the system refused what the command asked (exit status 1)."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"dynbpf: error: {self.format_message()}", err=True, file=file)


def json_option(func: F) -> F:
    option = click.option("-j", "--json", "as_json", is_flag=True, help="Print JSON for machines instead of text.")
    return option(func)


def pin_root_option(func: F) -> F:
    option = click.option(
        "--pin-root",
        default=PIN_ROOT,
        show_default=True,
        metavar="DIR",
        help="Where dynbpf's pins are looked for (every pin below it).",
    )
    return option(func)


def all_option(func: F) -> F:
    option = click.option(
        "-a", "--all", "everything", is_flag=True, help="Every one in the kernel, not only those pinned under the root."
    )
    return option(func)


def list_command(
    group: click.Group,
    kind: str,
    *,
    columns: Sequence[str],
    cells: Callable[[dict[str, Any]], list[Any]],
    wrap: Sequence[str] = (),
) -> None:
    """Add ``<group> list`` to ``group``: the objects of ``kind`` pinned under the pin root, or all the kernel's."""
    word = {"prog": "program"}.get(kind, kind)

    @group.command("list", help=f"The {word}s pinned under the pin root (with --all: every {word} the kernel has).")
    @pin_root_option
    @all_option
    @json_option
    def list_objects(pin_root: str, everything: bool, as_json: bool) -> None:
        from dynbpf._cli.objects import show_listing

        show_listing(
            kind,  # type: ignore[arg-type]  # one of objects.Kind, given by the three groups
            pin_root,
            everything=everything,
            as_json=as_json,
            columns=columns,
            cells=cells,
            wrap=wrap,
        )


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")
    sys.stdout.flush()


def print_json_line(data: Any) -> None:
    """One JSON document per line (a stream: ``run -j``), flushed at once for a reader at the other end."""
    sys.stdout.write(json.dumps(data, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, wrap: Sequence[str] = (), title: str | None = None
) -> None:
    """Rows under upper-case ``columns`` (and ``title`` above them); the columns named in ``wrap`` fold when
    the width runs out, the others never.

    A cell of None prints as ``-``.
    """
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=title,
        title_justify="left",
        box=None,
        pad_edge=False,
        show_edge=False,
        header_style="bold",
        padding=(0, 2, 0, 0),
    )
    for name in columns:
        folds = name in wrap
        table.add_column(name.upper(), no_wrap=not folds, overflow="fold" if folds else "ignore")
    for row in rows:
        table.add_row(*(escape("-" if cell is None else str(cell)) for cell in row))
    out = console()
    with out.capture() as captured:
        out.print(table)
    for line in captured.get().splitlines():  # rich pads every cell: no trailing blanks in a pipe or a file
        click.echo(line.rstrip())


def say(text: str) -> None:
    """A line for people (stderr when stdout carries JSON or events is the caller's choice)."""
    click.echo(text)


def note(text: str) -> None:
    """A line for people on stderr: what stays or goes, hints; never part of the output a script parses."""
    click.echo(text, err=True)


@contextlib.contextmanager
def failures() -> Iterator[None]:
    """Turn dynbpf's errors into the exit statuses above: a wrong command line 2, a refusal 1."""
    from dynbpf._maps.errors import CodecError, MapTypeError

    try:
        yield
    except (NotFound, OptionError, ObjectFormatError, FeatureMapError, CodecError, MapTypeError) as e:
        raise click.UsageError(str(e)) from e
    except DynbpfError as e:
        raise Failure(str(e)) from e


def bad_input(message: str, *, option: str | None = None) -> click.UsageError:
    """A wrong command line (exit status 2), naming the option at fault."""
    if option is not None:
        return click.BadParameter(message, param_hint=option)
    return click.UsageError(message)
