"""Store commands: ingest, traces, info, sql, datasets [download]."""

from __future__ import annotations

from pathlib import Path

import typer

from servecast.commands.common import HELP_MARKUP, DbOption, console, print_frame
from servecast.errors import DataFileError, ServecastError


def register(app: typer.Typer) -> None:
    app.command()(ingest)
    traces_app = typer.Typer(help="The traces in the store; `remove NAME` deletes one.",
                             invoke_without_command=True, rich_markup_mode=HELP_MARKUP)
    traces_app.callback()(traces)
    traces_app.command("remove")(remove)
    app.add_typer(traces_app, name="traces")
    app.command()(info)
    app.command()(sql)
    datasets_app = typer.Typer(help="Known source formats; `download NAME` fetches one.",
                               invoke_without_command=True, rich_markup_mode=HELP_MARKUP)
    datasets_app.callback()(datasets)
    datasets_app.command("download")(download)
    app.add_typer(datasets_app, name="datasets")


def ingest(
    source: str = typer.Argument(..., help="adapter name (see `servecast datasets`)"),
    paths: list[Path] = typer.Argument(..., help="files or folders"),
    trace: str = typer.Option(None, "--trace", help="trace name (default: from the file name)"),
    db: Path = DbOption,
    strict: bool = typer.Option(False, "--strict", help="refuse a file with any bad row"),
    maps: list[str] = typer.Option(
        [], "--map", help="user-log: FIELD=COLUMN or dotted.path, e.g. "
        "prompt_tokens=usage.prompt_tokens (repeat per field)"),
    mapping: Path = typer.Option(
        None, "--mapping", help="user-log: a TOML / YAML / JSON file with [map] and [units]"),
    units: list[str] = typer.Option(
        [], "--unit", help="user-log: FIELD=UNIT: arrival_s=iso|epoch-s|epoch-ms|epoch-us|"
        "epoch-ns|s|ms|auto; ttft_s=ms (s, ms, us, ns); latency=ms for every latency field"),
) -> None:
    """Ingest trace files into the store (idempotent; bad rows go to rejected_rows).

    `user-log` reads your own CSV / JSONL / Parquet request logs through a column mapping
    (--map / --mapping, --unit)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from servecast.store import Store

    if source == "user-log":
        from servecast.datasets.user_log import Mapping, UserLog

        source = UserLog(Mapping.parse(maps, mapping, units))
    elif maps or mapping or units:
        raise ServecastError(f"--map, --mapping and --unit are for `user-log`, not {source!r}")

    with Store(db) as store, Progress(
        TextColumn("[bold]ingest[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.description}"), console=console, transient=True,
    ) as bar:
        task = bar.add_task("", total=None)
        if console.is_terminal:  # DuckDB's own bar for a long single-file read
            store.con.execute("SET enable_progress_bar = true")
        result = store.ingest(
            source, paths, trace=trace, strict=strict,
            progress=lambda f, i, n: bar.update(task, completed=i, total=n,
                                                description=Path(f).name),
        )
    by_trace: dict[str, list[str]] = {}
    for f in result.skipped:
        by_trace.setdefault(f.trace, []).append(f.file)
    for stored, files in by_trace.items():
        what = files[0] if len(files) == 1 else f"{len(files):,} files"
        other = (f"; stored under that name, not {trace!r} (`servecast traces remove "
                 f"{stored}` first to ingest it as {trace!r})") if trace and trace != stored else ""
        console.print(f"[yellow]already ingested[/] {what} (trace {stored}){other}: "
                      "nothing to do", soft_wrap=True)
    if result.rows or not result.skipped:
        console.print(
            f"[green]ingested[/] {result.rows:,} rows into {', '.join(result.traces)} "
            f"({result.rejected:,} rejected"
            + (": see `servecast sql \"SELECT * FROM rejected_rows\"`)" if result.rejected else ")")
        )


def traces(ctx: typer.Context, db: Path = DbOption) -> None:
    """List the traces in the store with row and rejected-row counts."""
    if ctx.invoked_subcommand:
        return
    from servecast.store import Store

    with Store(db, read_only=True) as store:
        print_frame(store.traces(), title=f"traces in {store.path}")


def remove(trace: str, db: Path = DbOption) -> None:
    """Remove a trace: its rows in every table, its manifest entries and rejected rows, in
    one transaction (its files can then be ingested again)."""
    from servecast.store import Store

    with Store(db, read_only=True) as store:  # no store or no such trace: nothing created
        store.trace_info(trace)
    with Store(db) as store:
        rows = store.remove_trace(trace)
    console.print(f"removed trace {trace} ({rows:,} rows)")


def info(trace: str, db: Path = DbOption) -> None:
    """Summarize one trace: manifest, size, time span and key statistics."""
    from servecast.store import Store

    with Store(db, read_only=True) as store:
        meta = store.trace_info(trace)
        for k, v in meta.items():
            console.print(f"[bold]{k:>12}[/] {v}")
        if meta["table_name"] == "llm_requests":
            print_frame(store.sql(
                """SELECT count(*) AS requests, max(arrival_s) - min(arrival_s) AS span_s,
                   count(*) / nullif(max(arrival_s) - min(arrival_s), 0) AS rate_per_s,
                   median(prompt_tokens) AS prompt_p50, median(output_tokens) AS output_p50,
                   avg(failed::INT) AS failure_rate, count(DISTINCT session_id) AS sessions
                   FROM llm_requests WHERE trace = ?""", [trace]), title="requests")
        rejected = store.sql(
            "SELECT file, line, reason FROM rejected_rows WHERE trace = ? ORDER BY file, line "
            "LIMIT 10", [trace])
        if rejected.height:
            print_frame(rejected, title="first rejected rows")


def sql(query: str, db: Path = DbOption) -> None:
    """Run a read-only SQL query on the store and print the result (statements that write,
    such as COPY ... TO, EXPORT, ATTACH, INSTALL/LOAD, are refused)."""
    from servecast.store import Store

    with Store(db, read_only=True) as store:
        print_frame(store.query(query), max_rows=200)


def datasets(ctx: typer.Context) -> None:
    """List every adapter with its expected format, download URL, license and citation."""
    if ctx.invoked_subcommand:
        return
    from servecast.datasets import adapters

    for name, a in sorted(adapters().items()):
        c = a.catalog
        console.print(f"[bold cyan]{name}[/] -> {a.table}")
        console.print(f"  format:   {c.format}\n  url:      {c.url}\n  license:  {c.license}\n"
                      f"  cite:     {c.citation}",
                      soft_wrap=True, markup=False)  # whole URLs when piped; `[int]` is text


def download(
    name: str,
    out: Path = typer.Option(Path("data"), "--out", help="folder to save into"),
    timeout: float = typer.Option(15.0, help="seconds before giving up on the network"),
) -> None:
    """Fetch the public original of a dataset (needs network access)."""
    import urllib.error
    import urllib.request

    from servecast.datasets import get_adapter

    c = get_adapter(name).catalog
    if not c.download:
        raise ServecastError(f"{name}: no single-file download; get it from {c.url}")
    target = out / c.download.rsplit("/", 1)[-1]
    out.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(c.download, timeout=timeout) as r, open(part, "wb") as fh:
            while block := r.read(1 << 20):
                fh.write(block)
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        part.unlink(missing_ok=True)
        raise DataFileError(
            f"cannot download {c.download} ({getattr(e, 'reason', e)}): you seem to be offline; "
            f"download it by hand from {c.url} and run `servecast ingest {name} FILE`"
        ) from None
    part.rename(target)
    console.print(f"saved {target}; next: servecast ingest {name} {target}")
