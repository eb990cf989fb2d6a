"""End-to-end tests of `thalamus report`: run documents (fixtures, a
generated 500-node run and, when the research loop is built in, a real
offline run) are rendered by the binary, the SVG files are parsed as XML,
and report.html is loaded in headless Chromium, whose DOM must hold as many
points, crosses, tree nodes and table rows as the document has experiments,
and whose screenshot must not be blank."""
import html.parser
import json
import os
import random
import shutil
import struct
import subprocess
import unittest
import xml.etree.ElementTree as ET
import zlib

from harness import Case

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
SVG = "{http://www.w3.org/2000/svg}"


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = find_chromium()
NEEDS_CHROMIUM = unittest.skipUnless(
    CHROMIUM, "headless Chromium not found: install the Debian package 'chromium' "
    "(scripts/setup.sh does)")


def load_fixture(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return json.load(f)


def finished(node):
    return isinstance(node.get("order"), int) and node["order"] > 0


def has_metric(node):
    return node.get("status") == "ok" and isinstance(node.get("metric"), (int, float))


class Element:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent = tag, dict(attrs), parent
        self.children, self.text = [], []

    def classes(self):
        return (self.attrs.get("class") or "").split()

    def ancestors(self):
        e = self.parent
        while e is not None:
            yield e
            e = e.parent

    def inside(self, element_id):
        return any(a.attrs.get("id") == element_id for a in self.ancestors())

    def all_text(self):
        return "".join(self.text) + "".join(c.all_text() for c in self.children)


class DomParser(html.parser.HTMLParser):
    """The DOM Chromium dumped, as a tree of Elements."""
    VOID = {"meta", "br", "link", "img", "input", "hr", "col", "area", "base", "wbr", "source"}

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.root = Element("#root", {}, None)
        self.current = self.root
        self.elements = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        e = Element(tag, attrs, self.current)
        self.current.children.append(e)
        self.elements.append(e)
        if tag not in self.VOID:
            self.current = e

    def handle_startendtag(self, tag, attrs):
        e = Element(tag, attrs, self.current)
        self.current.children.append(e)
        self.elements.append(e)

    def handle_endtag(self, tag):
        e = self.current
        while e is not self.root and e.tag != tag:
            e = e.parent
        if e is not self.root:
            self.current = e.parent

    def handle_data(self, data):
        self.current.text.append(data)

    def select(self, tag, cls=None, inside=None):
        return [e for e in self.elements if e.tag == tag and (cls is None or cls in e.classes())
                and (inside is None or e.inside(inside))]


def png_pixels(path):
    """Decodes an 8-bit RGB or RGBA PNG (as Chromium writes them) into rows
    of (r, g, b) tuples, with zlib and struct alone."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 255
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(width)])
        prev = line
    return width, height, rows


def big_document(n=500, seed=7):
    """A run of n experiments grown like a search tree, every fifth failing."""
    rnd = random.Random(seed)
    nodes = [{"id": "n0", "parent": None, "status": "ok", "metric": 0.5, "order": 1,
              "kind": "baseline", "title": "baseline", "commit": "%040x" % 1}]
    for i in range(1, n):
        parent = rnd.randrange(max(0, i - 8), i)
        status = "ok" if i % 5 else rnd.choice(["failed", "timeout", "invalid", "oom"])
        nodes.append({
            "id": f"n{i}", "parent": f"n{parent}", "status": status,
            "metric": round(0.5 + rnd.random() * 0.4, 4) if status == "ok" else None,
            "order": i + 1, "kind": "improve", "label": rnd.choice(["improve", "maintain"]),
            "title": f"idea {i}: " + "tune the learning rate schedule and the warm-up " * 2,
            "commit": "%040x" % (i + 1)})
    return {"run": {"id": "r-big", "status": "finished",
                    "task": {"name": "big", "metric": "accuracy", "goal": "maximize"},
                    "baseline": {"node": "n0", "metric": 0.5}, "isolation": "full"},
            "nodes": nodes, "insights": [], "notes": [], "decisions": [], "usage": []}


class ReportCase(Case):
    def render(self, doc, name="out"):
        """Writes doc to a file, renders it with --from and returns the
        paths printed (as JSON)."""
        src = self.path(name + ".json")
        with open(src, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False)
        out = self.path(name)
        r = self.ok("report", "--from", src, "--out", out, "--json")
        paths = json.loads(r.stdout)
        for key in ("html", "markdown", "metric_svg", "tree_svg", "document"):
            self.assertTrue(os.path.isfile(paths[key]), key)
        return paths

    def chromium(self, *args):
        profile = self.path("chromium-profile")
        r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                            "--hide-scrollbars", f"--user-data-dir={profile}", *args],
                           env=dict(self.env, HOME=self.home), capture_output=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace")[-2000:])
        return r

    def dom(self, html_path):
        r = self.chromium("--dump-dom", "file://" + html_path)
        text = r.stdout.decode("utf-8")
        self.assertIn("</html>", text)
        return DomParser(text)

    def check_dom_matches(self, dom, doc):
        nodes = doc.get("nodes") or []
        done = [n for n in nodes if finished(n)]
        points = dom.select("circle", "point", inside="metric-chart")
        crosses = dom.select("g", "fail", inside="metric-chart")
        self.assertEqual(len(points), sum(1 for n in done if has_metric(n)))
        self.assertEqual(len(crosses), sum(1 for n in done if not has_metric(n)))
        by_id = {n["id"]: n for n in nodes}
        for p in points:
            node = by_id[p.attrs["data-node"]]
            self.assertAlmostEqual(float(p.attrs["data-metric"]), node["metric"], places=9)
            self.assertEqual(int(p.attrs["data-order"]), node["order"])
        tree_nodes = dom.select("g", "node", inside="tree")
        self.assertEqual(len(tree_nodes), len(nodes))
        self.assertEqual(sorted(g.attrs["data-node"] for g in tree_nodes),
                         sorted(n["id"] for n in nodes))
        for g in tree_nodes:
            self.assertIn(by_id[g.attrs["data-node"]].get("status") or "other", g.classes()
                          + ["other"])
        edges = dom.select("path", "edge", inside="tree")
        self.assertEqual(len(edges), sum(1 for n in nodes if n.get("parent") in by_id))
        rows = [tr for tr in dom.select("tr", inside="experiments") if tr.parent.tag == "tbody"]
        self.assertEqual(len(rows), len(nodes))
        self.assertEqual([tr.attrs["data-node"] for tr in rows], [n["id"] for n in nodes])
        # Nothing from the document became markup.
        self.assertEqual(dom.select("script"), [])
        self.assertEqual(dom.select("img"), [])
        return points, tree_nodes, rows


class TestReportFiles(ReportCase):
    def test_fixture_renders_every_file(self):
        doc = load_fixture("report_run.json")
        paths = self.render(doc)
        self.assertEqual(os.path.dirname(paths["html"]), self.path("out"))
        self.assertEqual(paths["run"], "r-20261128-1")
        # The SVG figures are well-formed XML with the expected elements.
        metric = ET.parse(paths["metric_svg"]).getroot()
        self.assertEqual(metric.tag, SVG + "svg")
        points = [c for c in metric.iter(SVG + "circle") if "point" in c.get("class", "")]
        self.assertEqual(len(points), sum(1 for n in doc["nodes"] if finished(n) and has_metric(n)))
        self.assertEqual(len(points), 5)
        tree = ET.parse(paths["tree_svg"]).getroot()
        groups = [g for g in tree.iter(SVG + "g") if "node" in g.get("class", "").split()]
        self.assertEqual(len(groups), len(doc["nodes"]))
        # Every title is in the tree, whole, as a tooltip.
        tips = {t.text for t in tree.iter(SVG + "title")}
        for n in doc["nodes"]:
            self.assertTrue(any(n["title"] in (t or "") for t in tips), n["title"])
        # The Markdown refers to the figures beside it, and run.json is the
        # document itself.
        with open(paths["markdown"], encoding="utf-8") as f:
            md = f.read()
        self.assertIn("](metric.svg)", md)
        self.assertIn("](tree.svg)", md)
        self.assertNotIn("<script>", md)
        self.assertIn("Report the wrong metric \\| pipes \\| and \\*stars\\*", md)
        with open(paths["document"], encoding="utf-8") as f:
            self.assertEqual(json.load(f), doc)

    def test_plain_output_lists_paths(self):
        src = os.path.join(FIXTURES, "report_baseline_only.json")
        r = self.ok("report", "--from", src, "--out", self.path("o"))
        lines = r.stdout.split()
        self.assertEqual([os.path.basename(p) for p in lines],
                         ["report.html", "report.md", "metric.svg", "tree.svg", "run.json"])

    def test_rendered_again_from_its_run_json(self):
        first = self.render(load_fixture("report_run.json"), "first")
        r = self.ok("report", "--from", first["document"], "--out", self.path("second"))
        with open(first["tree_svg"]) as a, open(self.path("second", "tree.svg")) as b:
            self.assertEqual(a.read(), b.read())

    def test_usage_errors(self):
        src = os.path.join(FIXTURES, "report_run.json")
        r = self.thalamus("report", "r1", "--from", src, "--out", self.path("x"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("not both", r.stderr)
        bad = self.path("bad.json")
        with open(bad, "w") as f:
            f.write("{\"run\": ")
        r = self.thalamus("report", "--from", bad, "--out", self.path("x"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("is not a run document", r.stderr)
        r = self.thalamus("report", "--from", src)  # not in a workspace, no --out
        self.assertEqual(r.returncode, 2)
        self.assertIn("--out DIR", r.stderr)
        r = self.thalamus("report", "--from", self.path("missing.json"), "--out", self.path("x"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("missing.json", r.stderr)
        self.assertFalse(os.path.exists(self.path("x", "report.html")))


@NEEDS_CHROMIUM
class TestReportInBrowser(ReportCase):
    def test_dom_matches_document(self):
        doc = load_fixture("report_run.json")
        paths = self.render(doc)
        dom = self.dom(paths["html"])
        points, tree_nodes, rows = self.check_dom_matches(dom, doc)
        best = [p.attrs["data-node"] for p in points if "best" in p.classes()]
        self.assertEqual(best, [doc["run"]["best"]["node"]])
        base = [p.attrs["data-node"] for p in points if "baseline" in p.classes()]
        self.assertEqual(base, ["n0"])
        self.assertEqual(len(dom.select("path", "best-so-far", inside="metric-chart")), 1)
        self.assertEqual(len(dom.select("line", "baseline", inside="metric-chart")), 1)
        # Hostile and non-ASCII titles arrive as text.
        body = dom.root.all_text()
        self.assertIn('Fix the import error <script>alert("x")</script>', body)
        self.assertIn("«quoted» 'single' \"double\"", body)
        self.assertIn("日本語", body)
        self.assertIn("Iris <classifier> & friends", dom.select("h1")[0].all_text())
        # Usage by agent, with a total; notes, decisions and isolation.
        usage = [tr for tr in dom.select("tr", inside="usage-table") if tr.parent.tag == "tbody"]
        self.assertEqual([tr.children[0].all_text() for tr in usage],
                         ["coder", "planner", "total"])
        self.assertIn("Prefer simple models: the <data> is small & noisy.", body)
        self.assertEqual(len([tr for tr in dom.select("tr", inside="decisions")
                              if tr.parent.tag == "tbody"]), 2)
        config = {tr.children[0].all_text(): tr.children[1].all_text()
                  for tr in dom.select("tr", inside="config-table") if tr.parent.tag == "tbody"}
        self.assertEqual(config["loop.strategy"], "mcts")
        self.assertEqual(config["sandbox.timeout"], "600")

    def test_screenshot_is_not_blank(self):
        paths = self.render(load_fixture("report_run.json"))
        png = self.path("shot.png")
        self.chromium(f"--screenshot={png}", "--window-size=1200,2000", "file://" + paths["html"])
        width, height, rows = png_pixels(png)
        self.assertEqual((width, height), (1200, 2000))
        colours, inked = set(), 0
        for y in range(0, height, 4):
            for x in range(0, width, 4):
                px = rows[y][x]
                colours.add(px)
                if max(px) < 200:
                    inked += 1
        samples = (height // 4) * (width // 4)
        self.assertGreater(len(colours), 50)          # text, figures, badges
        self.assertGreater(inked / samples, 0.01)     # something dark is drawn
        # The status colours of the figures are there: the green of "ok".
        self.assertTrue(any(abs(r - 0x2e) < 12 and abs(g - 0x7d) < 12 and abs(b - 0x32) < 12
                            for r, g, b in colours))

    def test_edge_documents(self):
        for name in ("report_baseline_only.json", "report_all_failed.json",
                     "report_empty.json"):
            with self.subTest(name=name):
                doc = load_fixture(name)
                paths = self.render(doc, name[:-5])
                for svg in ("metric_svg", "tree_svg"):
                    ET.parse(paths[svg])
                self.check_dom_matches(self.dom(paths["html"]), doc)
        all_failed = load_fixture("report_all_failed.json")
        dom = self.dom(self.path("report_all_failed", "report.html"))
        self.assertEqual(len(dom.select("g", "fail", inside="metric-chart")),
                         len(all_failed["nodes"]))
        self.assertEqual(dom.select("path", "best-so-far"), [])

    def test_five_hundred_experiments(self):
        doc = big_document()
        paths = self.render(doc, "big")
        tree = ET.parse(paths["tree_svg"]).getroot()
        # The tree is laid out without overlaps: no two nodes share a place.
        places = set()
        for g in tree.iter(SVG + "g"):
            if "node" in g.get("class", "").split():
                places.add(g.get("transform"))
        self.assertEqual(len(places), 500)
        self.check_dom_matches(self.dom(paths["html"]), doc)


class TestReportOfARun(ReportCase):
    """A real offline run in a real workspace, reported: the figures must
    hold what `thalamus log --json` says about the same run."""

    def test_report_matches_the_log(self):
        ws = self.init_workspace()
        r = self.thalamus("report", cwd=ws)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no run yet", r.stderr)
        self.ok("run", "--provider", "offline", "--rounds", "2", "--ideas", "2",
                "--experiments", "5", "--seed", "3", cwd=ws)
        paths = json.loads(self.ok("report", "--json", cwd=ws).stdout)
        log = json.loads(self.ok("log", "--json", cwd=ws).stdout)
        run_id = log["run"]
        self.assertEqual(paths["run"], run_id)
        self.assertEqual(os.path.dirname(paths["html"]),
                         os.path.join(ws, ".thalamus", "reports", run_id))
        nodes = log["nodes"]
        self.assertGreaterEqual(len(nodes), 2)
        by_id = {n["id"]: n for n in nodes}

        metric = ET.parse(paths["metric_svg"]).getroot()
        points = {c.get("data-node"): c for c in metric.iter(SVG + "circle")
                  if "point" in c.get("class", "").split()}
        expected = {n["id"] for n in nodes if finished(n) and has_metric(n)}
        self.assertEqual(set(points), expected)
        for node_id, c in points.items():
            self.assertAlmostEqual(float(c.get("data-metric")), by_id[node_id]["metric"], places=9)
            self.assertEqual(int(c.get("data-order")), by_id[node_id]["order"])
        # The best point is the run's best: the highest accuracy.
        best = max((n for n in nodes if has_metric(n)), key=lambda n: n["metric"])
        marked = [k for k, c in points.items() if "best" in c.get("class").split()]
        self.assertEqual(len(marked), 1)
        self.assertEqual(by_id[marked[0]]["metric"], best["metric"])
        tree = ET.parse(paths["tree_svg"]).getroot()
        self.assertEqual(sorted(g.get("data-node") for g in tree.iter(SVG + "g")
                                if "node" in g.get("class", "").split()),
                         sorted(by_id))
        # The commits in the table are the ledger's.
        with open(paths["markdown"], encoding="utf-8") as f:
            md = f.read()
        for n in nodes:
            if n.get("commit"):
                self.assertIn(n["commit"][:10], md)
                self.git(ws, "cat-file", "-e", n["commit"] + "^{commit}")
        if CHROMIUM:
            self.check_dom_matches(self.dom(paths["html"]), log)

        # A named run, elsewhere; an unknown run is an error.
        out = self.path("elsewhere")
        self.ok("report", run_id, "--out", out, cwd=ws)
        self.assertTrue(os.path.isfile(os.path.join(out, "report.html")))
        r = self.thalamus("report", "r99", cwd=ws)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no run 'r99'", r.stderr)


if __name__ == "__main__":
    unittest.main()
