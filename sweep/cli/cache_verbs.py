"""`prefsweep cache ls|rm`: the reference cache shared by the studies under a storage."""
from __future__ import annotations

import json
import time

from rich.table import Table

from sweep.cli.output import console


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"


def cmd_cache_ls(args) -> int:
    from sweep.service.cache import cache_entries

    entries = cache_entries(args.storage)
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    # The heading on its own unwrapped line: as the table's title it would wrap to the table's
    # width, cutting a long storage path (and the count after it) across lines.
    console.print(f"reference cache under {args.storage}: {len(entries)} entries, "
                  f"{_size(sum(e['bytes'] for e in entries))}", highlight=False, soft_wrap=True)
    table = Table()
    for column in ("key", "size", "rows (train/eval)", "reference", "max_length", "used by", "last used"):
        table.add_column(column)
    for e in entries:
        rows = e["rows"] or {}
        table.add_row(e["key"] + ("" if e["complete"] else " (incomplete)"), _size(e["bytes"]),
                      f"{rows.get('train', '-')}/{rows.get('eval', '-')}", str(e["reference"]), str(e["max_length"]),
                      ", ".join(e["used_by"]) or "-", _when(e["last_used"]))
    console.print(table)
    return 0


def cmd_cache_rm(args) -> int:
    from sweep.service.cache import UnknownCacheEntry, remove_entries

    chosen_by = [bool(args.keys), args.all, args.unused_days is not None]
    if sum(chosen_by) != 1:
        console.print("[red]say which entries to remove: KEY..., or --all, or --unused-days N (one of them)[/red]")
        return 2
    try:
        removed = remove_entries(args.storage, args.keys, everything=args.all, unused_days=args.unused_days)
    except UnknownCacheEntry as err:
        console.print(f"[red]{err}[/red]", highlight=False, soft_wrap=True)
        return 1
    console.print(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}"
                  + "".join(f"\n  {key}" for key in removed), highlight=False)
    return 0


def add_verbs(verb) -> None:
    cache = verb("cache", None, "the reference log-probs cache shared by the studies under a storage")
    actions = cache.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("ls", help="list the entries: size, rows, model, the studies that used each, when last")
    ls.set_defaults(fn=cmd_cache_ls)
    ls.add_argument("--json", action="store_true")
    rm = actions.add_parser("rm", help="remove entries (a later study with the same inputs computes them again)")
    rm.set_defaults(fn=cmd_cache_rm)
    rm.add_argument("keys", nargs="*", metavar="KEY", help="an entry's key, or its first 6+ characters")
    which = rm.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every entry")
    which.add_argument("--unused-days", type=float, metavar="N", help="entries no study used in the last N days")
    for sub in (ls, rm):
        sub.add_argument("--storage", default="runs", help="the storage.path the studies use")

