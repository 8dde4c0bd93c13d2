#!/usr/bin/env python
"""Make an ``asv publish`` dashboard work offline (issue 16).

asv 0.6's dashboard loads jQuery, flot (and its plugins), stupidtable, blueimp-md5 and bootstrap from
CDNs, so on a machine without internet it shows nothing ("Can not determine continental origin of
swallow").  Run this after ``asv publish``: it fetches those libraries once, **at publish time**, as
npm packages (``npm pack``, the registry's own client, into a cache folder that later runs reuse
without network), copies the files the dashboard needs into ``<html>/vendor/`` and rewrites the
pages' ``<script src>``/``<link href>`` to the local copies.  Viewing the dashboard then needs no
network, from a local http server (``python -m http.server``, ``asv preview``) or from file://.

    asv publish && python ../scripts/asv_offline.py html           # from asv_bench/
    python scripts/asv_offline.py asv_bench/html --cache DIR       # a shared tarball cache

A CDN address this script does not know (a newer asv) is an error, not a silent online page.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

# CDN address -> (npm package@version, file inside the package).  Versions are asv 0.6's; npm has
# no stupidtable 1.0.1 (the jQuery plugin's only npm release is 1.1.3, same $.fn.stupidtable API),
# and flot 0.8.3 ships unminified files only on npm (the same code cdnjs minifies).
CDN_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^https://code\.jquery\.com/jquery-(?P<v>[\d.]+)\.min\.js$"), "jquery@{v}:dist/jquery.min.js"),
    (re.compile(r"^https://cdnjs\.cloudflare\.com/ajax/libs/flot/(?P<v>[\d.]+)/(?P<f>jquery\.flot[\w.]*?)\.min\.js$"),
     "flot@{v}:{f}.js"),
    (re.compile(r"^https://cdnjs\.cloudflare\.com/ajax/libs/stupidtable/[\d.]+/stupidtable\.min\.js$"),
     "stupid-table-plugin@1.1.3:stupidtable.min.js"),
    (re.compile(r"^https://cdnjs\.cloudflare\.com/ajax/libs/blueimp-md5/(?P<v>[\d.]+)/(?P<f>js/md5\.min\.js)$"),
     "blueimp-md5@{v}:{f}"),
    # jsdelivr's npm mirror: https://cdn.jsdelivr.net/npm/<name>@<version>/<path>
    (re.compile(r"^https://cdn\.jsdelivr\.net/npm/(?P<n>(?:@[\w.-]+/)?[\w.-]+)@(?P<v>[\w.-]+)/(?P<f>[^?#]+)$"),
     "{n}@{v}:{f}"),
]
# <script ... src="http..."> and <link ... href="http..."> tags: resources the page loads
TAG = re.compile(r"<(script|link)\b[^>]*?\b(src|href)=\"(https?://[^\"]+)\"[^>]*>", re.I)
STRIP_ATTRS = re.compile(r"\s+(integrity|crossorigin|referrerpolicy)=\"[^\"]*\"", re.I)
CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)['\"]?\s*\)")


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ntkframe" / "asv-vendor"


def resolve(url: str) -> tuple[str, str]:
    """``url`` -> (``name@version``, path in the package), or SystemExit naming the unknown address."""
    for pattern, target in CDN_RULES:
        m = pattern.match(url)
        if m:
            spec, path = target.format(**m.groupdict()).split(":", 1)
            return spec, path
    raise SystemExit(f"asv_offline: no package known for {url} (a newer asv?); add a rule to CDN_RULES")


def fetch(spec: str, cache: Path) -> Path:
    """The folder of npm package ``spec`` (``name@version``), unpacked from a cached ``npm pack`` tarball."""
    name, version = spec.rsplit("@", 1)
    unpacked = cache / f"{name.replace('/', '__')}-{version}"
    if (unpacked / "package.json").is_file():
        return unpacked
    cache.mkdir(parents=True, exist_ok=True)
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(f"asv_offline: {spec} is not in the cache {cache} and npm is not installed "
                         "(install Node.js/npm, or copy a cache made elsewhere with --cache)")
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([npm, "pack", "--json", "--pack-destination", tmp, spec], capture_output=True,
                             text=True)
        if out.returncode != 0:
            raise SystemExit(f"asv_offline: `npm pack {spec}` failed:\n{out.stderr.strip()}")
        filename = json.loads(out.stdout)[0]["filename"]
        tarball = Path(tmp) / Path(filename).name
        staging = Path(tmp) / "unpacked"
        with tarfile.open(tarball) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith("package/")
                       and ".." not in PurePosixPath(m.name).parts]
            for member in members:
                target = staging / member.name[len("package/"):]
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        if unpacked.exists():
            shutil.rmtree(unpacked)
        shutil.move(str(staging), unpacked)
    return unpacked


def copy_with_assets(package: Path, path: str, dest_root: Path) -> list[Path]:
    """Copy ``package/path`` to ``dest_root/path``, and for a stylesheet the files its url(...) name."""
    src = package / path
    if not src.is_file():
        raise SystemExit(f"asv_offline: {package.name} has no file {path}")
    copied = []
    queue = [PurePosixPath(path)]
    while queue:
        rel = queue.pop()
        target = dest_root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package / rel, target)
        copied.append(target)
        if rel.suffix == ".css":
            for ref in CSS_URL.findall((package / rel).read_text(encoding="utf-8", errors="replace")):
                if re.match(r"^(data:|https?:|//|#)", ref):
                    continue
                asset = PurePosixPath(os.path.normpath(str(rel.parent / ref.split("?")[0].split("#")[0])))
                if (package / asset).is_file() and not (dest_root / asset).exists():
                    queue.append(asset)
    return copied


def vendor(html_dir: Path, cache: Path) -> dict[str, str]:
    """Rewrite every page of ``html_dir`` to load its CDN resources from ``html_dir/vendor``; returns url -> local path."""
    pages = sorted(html_dir.glob("*.html"))
    if not pages:
        raise SystemExit(f"asv_offline: no *.html in {html_dir} (run `asv publish` first)")
    mapping: dict[str, str] = {}
    for page in pages:
        text = page.read_text(encoding="utf-8")

        def local(match: re.Match[str]) -> str:
            url = match.group(3)
            if url not in mapping:
                spec, path = resolve(url)
                package = fetch(spec, cache)
                dest = html_dir / "vendor" / spec.replace("/", "__")
                copy_with_assets(package, path, dest)
                mapping[url] = f"vendor/{spec.replace('/', '__')}/{path}"
            # the SRI hashes are the CDN's files; the vendored copies come from the npm tarballs
            # (whose integrity npm checked), so the integrity/crossorigin attributes go
            return STRIP_ATTRS.sub("", match.group(0)).replace(url, mapping[url])

        new = TAG.sub(local, text)
        left = TAG.findall(new)
        if left:
            raise SystemExit(f"asv_offline: {page.name} still loads {[u for _, _, u in left]}")
        if new != text:
            page.write_text(new, encoding="utf-8")
    manifest = {url: {"file": rel, "sha256": hashlib.sha256((html_dir / rel).read_bytes()).hexdigest()}
                for url, rel in mapping.items()}
    (html_dir / "vendor" / "manifest.json").parent.mkdir(parents=True, exist_ok=True)
    (html_dir / "vendor" / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return mapping


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html", type=Path, help="the folder `asv publish` wrote (asv.conf.json's html_dir)")
    parser.add_argument("--cache", type=Path, default=default_cache(),
                        help="where npm tarballs are unpacked and reused (default: %(default)s)")
    args = parser.parse_args(argv)
    mapping = vendor(args.html.resolve(), args.cache)
    print(f"asv_offline: {len(mapping)} CDN resources vendored into {args.html / 'vendor'}; "
          "the dashboard needs no network")
    return 0


if __name__ == "__main__":
    sys.exit(main())
