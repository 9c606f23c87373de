"""Resolving a run's configuration: published defaults, and fields that belong to one algorithm."""

import pytest

from jmeta.experiments import Config, resolve


def test_matching_learns_its_attention_scale_from_ten_on_omniglot():
  c = resolve(Config('matching', 'omniglot'))
  assert (c.attention_scale, c.learn_attention_scale) == (10.0, True)
  paper = resolve(Config('matching', 'omniglot', attention_scale=1.0, learn_attention_scale=False))
  assert (paper.attention_scale, paper.learn_attention_scale) == (1.0, False)


@pytest.mark.parametrize('field', ['attention_scale', 'learn_attention_scale'])
def test_attention_scale_belongs_to_matching_networks(field):
  with pytest.raises(ValueError, match='apply to matching networks, not protonet'):
    resolve(Config('protonet', 'omniglot', **{field: 2.0 if field == 'attention_scale' else True}))


def test_attention_scale_must_be_positive():
  with pytest.raises(ValueError, match='attention_scale must be positive'):
    resolve(Config('matching', 'omniglot', attention_scale=0.0))


def test_runs_saved_before_the_scale_existed_resume_with_the_paper_attention():
  saved = resolve(Config('matching', 'omniglot')).to_json()
  del saved['attention_scale'], saved['learn_attention_scale']
  c = resolve(Config.from_json(saved))
  assert (c.attention_scale, c.learn_attention_scale) == (1.0, False)


def test_eval_inner_steps_zero_is_kept_and_none_follows_training():
  assert resolve(Config('maml', eval_inner_steps=0)).eval_inner_steps == 0
  assert resolve(Config('maml', inner_steps=3)).eval_inner_steps == 3


@pytest.mark.parametrize('shots, queries', [(1, 9), (5, 5)])
def test_reptile_on_omniglot_trains_on_ten_examples_a_class_in_one_pass_of_minibatches(shots, queries):
  c = resolve(Config('reptile', 'omniglot', shots=shots))
  assert (c.queries, c.inner_steps, c.inner_batch, c.inner_opt) == (queries, 5, 10, 'adam0')
  assert resolve(Config('reptile', 'omniglot', ways=20, inner_steps=10)).inner_batch == 20


def test_inner_batch_belongs_to_reptile():
  with pytest.raises(ValueError, match='inner_batch applies to reptile, not maml'):
    resolve(Config('maml', 'omniglot', inner_batch=10))
