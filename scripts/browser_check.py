#!/usr/bin/env python
"""Open the docs site and the asv dashboard in headless Chromium with no network (issue 16).

Checks, for the Sphinx site (opened from file://, as a reader opens docs/_build/index.html):

- no request leaves the machine: every request is file://, data:, blob: or to 127.0.0.1/localhost
  (anything else is blocked, by the request router and by Chromium's host resolver, and fails the
  check), and no request fails;
- every page with math has it rendered: each ``.math`` element holds MathJax output (mjx-container;
  KaTeX/MathML count too) and no raw ``\\[``, ``\\(`` or ``$$`` is left in the text outside code;
- every image loads, and the tutorials' multi-panel figures are shown wide and link to their PNG;
- no JavaScript error.

For an asv dashboard (after ``asv publish`` and ``scripts/asv_offline.py``), served by
``python -m http.server`` on 127.0.0.1: the same request rules, the summary grid draws its plots
and a benchmark page draws its graph (flot canvases present), and asv's "continental origin of
swallow" error page never appears.

Screenshots (docs home page, theory page, one tutorial; dashboard index and one benchmark graph) go
to ``--out`` (default ci-artifacts/, git-ignored) and their paths are printed.

Chromium is Debian's /usr/bin/chromium (or ``--chromium``/``$NTKFRAME_CHROMIUM``), driven through the
pip package ``playwright`` with ``executable_path``, so no browser is downloaded.  Where Chromium
or playwright is missing the check prints ``SKIPPED: <why>`` and exits 0 (exit 1 with ``--strict``);
a failed check exits 1.

    python scripts/browser_check.py --build-docs                   # build docs/_build, then check it
    python scripts/browser_check.py --docs docs/_build --asv-html asv_bench/html
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
    "--disable-extensions", "--disable-domain-reliability", "--no-pings",
    # second line of defence: every host name but the local ones resolves to nothing
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
LOCAL_SCHEMES = {"file", "data", "blob", "about"}
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
VIEWPORT = {"width": 1440, "height": 1000}

# what a page reports about its math, images and figures (run in the page)
INSPECT_DOCS = """() => {
  const rendered = 'mjx-container, .katex, math';
  const math = Array.from(document.querySelectorAll('.math'));
  const unrendered = math.filter(e => !e.matches(rendered) && !e.querySelector(rendered));
  const clone = document.body.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, textarea, ' + rendered).forEach(e => e.remove());
  const text = clone.textContent;
  const raw = ['\\\\[', '\\\\(', '$$'].filter(s => text.includes(s));
  const broken = Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);
  const content = document.querySelector('article') || document.body;
  const figures = Array.from(document.querySelectorAll('figure.ntk-wide')).map(f => {
    const img = f.querySelector('img');
    const link = img && img.closest('a');
    return {width: img ? img.getBoundingClientRect().width : 0,
            link: link ? link.getAttribute('href') : null};
  });
  return {math: math.length, unrendered: unrendered.length,
          rendered: document.querySelectorAll('mjx-container').length, raw, broken,
          contentWidth: content.getBoundingClientRect().width, figures};
}"""


class Skip(Exception):
    """The check cannot run here (no Chromium, no playwright): not a failure."""


class Failed(Exception):
    """The check ran and found a problem."""


def find_chromium(explicit: str | None) -> str:
    candidates = [explicit, os.environ.get("NTKFRAME_CHROMIUM"), "/usr/bin/chromium",
                  shutil.which("chromium") or "", shutil.which("chromium-browser") or ""]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise Skip("no Chromium found (/usr/bin/chromium; on Debian/Ubuntu: apt-get install chromium, "
               "or pass --chromium PATH)")


def is_local(url: str) -> bool:
    parsed = urlparse(url)
    if parsed.scheme in LOCAL_SCHEMES:
        return True
    return parsed.scheme in ("http", "https", "ws", "wss") and (parsed.hostname or "") in LOCAL_HOSTS


class Session:
    """One headless Chromium with a request log; every page is checked against it."""

    def __init__(self, chromium: str, out: Path) -> None:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as exc:
            raise Skip(f"the pip package playwright is not installed ({exc}); "
                       "pip install -e '.[docs]' installs it") from exc
        self.out = out
        self.external: list[str] = []
        self.failed: list[str] = []
        self.errors: list[str] = []
        self.screenshots: list[Path] = []
        self._pw = sync_playwright().start()
        try:
            self.browser = self._pw.chromium.launch(executable_path=chromium, headless=True,
                                                    args=CHROMIUM_FLAGS, timeout=30_000)
        except Exception as exc:
            self._pw.stop()
            raise Skip(f"{chromium} did not start under playwright: {exc}") from exc
        self.context = self.browser.new_context(viewport=VIEWPORT, service_workers="block")
        self.context.set_default_timeout(20_000)
        self.context.route("**/*", self._route)
        self.context.on("request", self._on_request)
        self.context.on("requestfailed", self._on_failed)
        self.context.on("response", self._on_response)

    def _route(self, route: Any) -> None:
        if is_local(route.request.url):
            route.continue_()
        else:
            route.abort("blockedbyclient")

    def _on_request(self, request: Any) -> None:
        if not is_local(request.url):
            self.external.append(request.url)

    def _on_failed(self, request: Any) -> None:
        if is_local(request.url):
            self.failed.append(f"{request.url} ({request.failure})")

    def _on_response(self, response: Any) -> None:
        if response.status >= 400:
            self.failed.append(f"{response.url} (HTTP {response.status})")

    def page(self, url: str) -> Any:
        page = self.context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{url}: {exc}"))
        page.goto(url, wait_until="load")
        return page

    def screenshot(self, page: Any, name: str) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / name
        page.screenshot(path=str(path))
        self.screenshots.append(path)

    def assert_clean(self, what: str) -> None:
        problems = []
        if self.external:
            problems.append(f"requests left the machine: {sorted(set(self.external))[:10]}")
        if self.failed:
            problems.append(f"failed requests: {sorted(set(self.failed))[:10]}")
        if self.errors:
            problems.append(f"JavaScript errors: {self.errors[:5]}")
        if problems:
            raise Failed(f"{what}: " + "; ".join(problems))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.browser.close()
        with contextlib.suppress(Exception):
            self._pw.stop()


def build_docs(build: Path) -> None:
    """``sphinx-build -q -b html docs BUILD`` (CI's -W build runs before; this one only needs pages)."""
    cmd = [sys.executable, "-m", "sphinx", "-q", "-b", "html", str(ROOT / "docs"), str(build)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise Failed(f"sphinx-build failed:\n{done.stderr[-3000:]}")


def wait_for_math(page: Any) -> None:
    """Until MathJax has typeset the page (no-op on a page without MathJax)."""
    page.evaluate("""() => (window.MathJax && MathJax.startup && MathJax.startup.promise)
                     ? MathJax.startup.promise.then(() => true) : true""")


def check_docs(session: Session, build: Path, log: list[str]) -> None:
    index = build / "index.html"
    if not index.is_file():
        raise Failed(f"no {index}: build the docs first (or pass --build-docs)")
    pages = sorted(p for p in build.rglob("*.html")
                   if not p.relative_to(build).parts[0].startswith("_")
                   and ('class="math' in p.read_text(encoding="utf-8", errors="replace")))
    pages = [index] + [p for p in pages if p != index]
    total_math = 0
    for path in pages:
        rel = path.relative_to(build).as_posix()
        page = session.page(path.as_uri())
        wait_for_math(page)
        info = page.evaluate(INSPECT_DOCS)
        if info["unrendered"] or info["raw"]:
            raise Failed(f"{rel}: {info['unrendered']} of {info['math']} formulas not rendered; "
                         f"raw TeX delimiters in the text: {info['raw']}")
        if info["math"] and not info["rendered"]:
            raise Failed(f"{rel}: {info['math']} formulas but no MathJax output")
        if info["broken"]:
            raise Failed(f"{rel}: images that did not load: {info['broken'][:5]}")
        for fig in info["figures"]:
            if not (fig["link"] or "").endswith(".png"):
                raise Failed(f"{rel}: a wide figure does not link to its full-size PNG ({fig})")
            if fig["width"] < info["contentWidth"] * 0.99:
                raise Failed(f"{rel}: a wide figure is {fig['width']:.0f}px, narrower than the "
                             f"content ({info['contentWidth']:.0f}px)")
        total_math += info["math"]
        if rel == "index.html":
            session.screenshot(page, "docs-home.png")
        elif rel == "theory.html":
            session.screenshot(page, "docs-theory.png")
        elif rel == "tutorials/drift.html":
            wide = [f["width"] for f in info["figures"]]
            log.append(f"docs: tutorials/drift.html wide figures {', '.join(f'{w:.0f}' for w in wide)}px "
                       f"(content {info['contentWidth']:.0f}px, viewport {VIEWPORT['width']}px)")
            page.locator("figure").first.scroll_into_view_if_needed()
            session.screenshot(page, "docs-tutorial-drift.png")
        page.close()
    session.assert_clean("docs")
    log.append(f"docs: {len(pages)} pages from file://, {total_math} formulas rendered by MathJax, "
               "every request local, none failed")


@contextlib.contextmanager
def http_server(directory: Path) -> Iterator[str]:
    """``python -m http.server`` on 127.0.0.1 (a free port) serving ``directory``; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(directory)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise Failed(f"python -m http.server did not start on 127.0.0.1:{port}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def check_asv(session: Session, html: Path, log: list[str]) -> None:
    index = html / "index.html"
    if not index.is_file():
        raise Failed(f"no {index}: run `asv publish` (and scripts/asv_offline.py) first")
    if "vendor/" not in index.read_text(encoding="utf-8"):
        raise Failed(f"{index} still loads its libraries from CDNs: run scripts/asv_offline.py {html}")
    with http_server(html) as base:
        page = session.page(f"{base}/index.html")
        page.wait_for_selector("#summarygrid-display .benchmark-container", state="attached")
        # the summary grid draws one small flot plot per benchmark, lazily as they scroll into view
        page.wait_for_function("() => document.querySelectorAll('#summarygrid-display canvas').length > 0")
        thumbs = page.evaluate("() => document.querySelectorAll('#summarygrid-display canvas').length")
        session.screenshot(page, "asv-index.png")
        # a benchmark page with a graph: the first benchmark whose results hold numbers
        names = page.evaluate("""() => Array.from(document.querySelectorAll('#summarygrid-display a.benchmark-container'))
                                     .map(a => a.getAttribute('href'))""")
        drawn = None
        for href in names:
            page.goto(f"{base}/index.html{href}", wait_until="load")
            with contextlib.suppress(Exception):
                page.wait_for_selector("#main-graph canvas.flot-base", state="visible", timeout=8_000)
                drawn = href
                break
        if drawn is None:
            raise Failed(f"asv dashboard: no benchmark page drew a graph (tried {len(names)})")
        canvases = page.evaluate("() => document.querySelectorAll('#main-graph canvas').length")
        # flot keeps its plot object on the placeholder: the series it drew, with their points
        series = page.evaluate("""() => { const plot = window.jQuery && jQuery('#main-graph').data('plot');
                                          return plot ? plot.getData().filter(s => s.data.length > 0).length : 0; }""")
        if not series:
            raise Failed(f"asv dashboard: the graph of {drawn} has no data series")
        session.screenshot(page, "asv-benchmark.png")
        if "continental origin of swallow" in page.content():
            raise Failed("asv dashboard: asv's JavaScript load failure page was shown")
        page.close()
    session.assert_clean("asv dashboard")
    log.append(f"asv dashboard: served from 127.0.0.1, {len(names)} benchmarks, {thumbs} summary plots, "
               f"graph of {drawn.lstrip('#')} drawn ({series} series, {canvases} canvases), every request local, none failed")


def run(args: argparse.Namespace) -> list[str]:
    """Run the selected checks; returns the log lines (raises Skip or Failed)."""
    chromium = find_chromium(args.chromium)
    if args.build_docs:
        build_docs(args.docs)
    log = [f"chromium: {chromium}"]
    session = Session(chromium, args.out)
    try:
        if args.docs is not None:
            check_docs(session, args.docs.resolve(), log)
        if args.asv_html is not None:
            check_asv(session, args.asv_html.resolve(), log)
    finally:
        session.close()
        log += [f"screenshot: {p}" for p in session.screenshots]
    return log


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--docs", type=Path, default=None,
                        help="built Sphinx site to check (default: docs/_build unless only --asv-html is given)")
    parser.add_argument("--build-docs", action="store_true", help="run sphinx-build into --docs first")
    parser.add_argument("--asv-html", type=Path, default=None, help="asv dashboard folder to check")
    parser.add_argument("--out", type=Path, default=ROOT / "ci-artifacts", help="screenshot folder (default: %(default)s)")
    parser.add_argument("--chromium", default=None, help="Chromium executable (default: /usr/bin/chromium)")
    parser.add_argument("--timeout", type=int, default=110, help="seconds before the whole check fails")
    parser.add_argument("--strict", action="store_true", help="exit 1 instead of 0 when the check cannot run")
    args = parser.parse_args(argv)
    if args.docs is None and (args.asv_html is None or args.build_docs):
        args.docs = ROOT / "docs" / "_build"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.monotonic()

    def timeout(*_: Any) -> None:
        raise Failed(f"the browser check took more than {args.timeout} s")

    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, timeout)
        signal.alarm(args.timeout)
    try:
        lines = run(args)
    except Skip as exc:
        print(f"browser check SKIPPED: {exc}")
        return 1 if args.strict else 0
    except Failed as exc:
        print(f"browser check FAILED: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # playwright's TimeoutError and friends: the page never got there
        print(f"browser check FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if hasattr(signal, "SIGALRM"):
            signal.alarm(0)
    for line in lines:
        print(f"browser check: {line}")
    print(f"browser check passed in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
