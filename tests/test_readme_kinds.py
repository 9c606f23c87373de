"""The README's "Task kinds" examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / 'README.md'


def blocks():
  text = README.read_text()
  section = text[text.index('\n## Task kinds\n'):]
  section = section[:section.index('\n## ', 1)]
  return re.findall(r'```python\n(.*?)```', section, re.S)


def test_the_section_has_one_example_per_kind():
  assert len(blocks()) == 3


@pytest.mark.parametrize('index', range(3))
def test_example_runs(index, capsys):
  namespace = {}
  exec(compile(blocks()[index], f'README.md (Task kinds, example {index + 1})', 'exec'), namespace)
  if index == 0:
    assert namespace['losses'].shape == (16,) and bool(abs(namespace['losses']).sum() > 0)
  if index == 1:
    assert namespace['logits'].shape == (50, 5) and namespace['by_instance'].shape == (6,)
  if index == 2:
    assert namespace['trajectories'].reward.shape == (8, 100)
    assert namespace['support'].obs.shape == (20, 100, 2)
