"""The package's layering: no import cycles, and no module imports a higher layer (house plan:
leaves -> components -> methods/tsfa -> fed -> wiring -> sweeps). Run alone: python -m pytest tests/test_layering.py"""
import ast
import os

from conftest import ROOT

# layer of each top-level part of fedlora/ (a module may import its own layer or lower ones)
LAYERS = {
    "section": 0, "registry": 0,
    "utils": 1, "run": 1, "schedules": 1, "models": 1, "lora": 1, "data": 1, "wireless": 1,
    "tracking": 1,
    "compress": 2, "soft": 2, "tasks": 2, "server": 2, "aggregation": 2, "optim": 2, "drift": 2,
    "methods": 3, "tsfa": 3,
    "fed": 4,
    "config": 5, "summary": 5, "train": 5, "cli": 5, "__main__": 5,
    "sweep": 6,  # runs the command line (fedlora.cli) as processes, over grids of configs
}


def import_graph() -> dict:
  """`{module: {modules it imports}}` over fedlora/, every import statement (function-level too)."""
  mods = {}
  for dp, _, files in os.walk(os.path.join(ROOT, "fedlora")):
    for f in files:
      if f.endswith(".py"):
        rel = os.path.relpath(os.path.join(dp, f), ROOT)[:-3].replace(os.sep, ".")
        mods[rel.removesuffix(".__init__")] = os.path.join(dp, f)
  graph = {m: set() for m in mods}
  for m, path in mods.items():
    pkg = m if path.endswith("__init__.py") else m.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(open(path).read())):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
          base = ".".join(parts + ([base] if base else []))
        names = [base] + [f"{base}.{a.name}" for a in node.names]
      else:
        continue
      for n in names:
        while n and n not in mods:
          n = n.rsplit(".", 1)[0] if "." in n else ""
        if n and n != m:
          graph[m].add(n)
  return graph


def cycles(graph: dict) -> list:
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))
  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def layer(module: str) -> int:
  parts = module.split(".")
  return LAYERS[parts[1] if len(parts) > 1 else "__main__"]


def test_every_part_of_the_package_has_a_layer():
  tops = {m.split(".")[1] for m in import_graph() if "." in m}
  assert tops <= set(LAYERS), f"parts without a layer: {sorted(tops - set(LAYERS))}"


def test_no_import_cycles():
  assert cycles(import_graph()) == []


def test_no_module_imports_a_higher_layer():
  graph = import_graph()
  up = [f"{m} -> {d}" for m, deps in sorted(graph.items()) for d in sorted(deps) if layer(d) > layer(m)]
  assert up == []


def test_the_check_finds_a_cycle_and_an_upward_import():
  g = {"fedlora.a": {"fedlora.b"}, "fedlora.b": {"fedlora.a"}, "fedlora.c": set()}
  assert cycles(g) == [["fedlora.a", "fedlora.b"]]
  assert layer("fedlora.fed.round") > layer("fedlora.server.base")
