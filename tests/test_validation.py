"""Bad input raises ValueError at the boundary, naming the problem."""

import math

import jax
import jax.numpy as jnp
import optax
import pytest

import jmeta
from helpers import meta_batch, mlp_apply, mlp_params, regression_task


def test_mismatched_support_and_query_feature_shapes():
  task = regression_task(jax.random.PRNGKey(0))
  bad = task._replace(query=jmeta.Split(jnp.zeros((7, 2)), task.query.y))
  with pytest.raises(ValueError, match=r'support inputs have shape \(1,\).*query inputs have \(2,\)'):
    jmeta.maml(mlp_apply).loss(mlp_params(jax.random.PRNGKey(1)), bad)


def test_mismatched_examples_in_x_and_y():
  task = regression_task(jax.random.PRNGKey(0))
  bad = task._replace(support=jmeta.Split(task.support.x, task.support.y[:3]))
  with pytest.raises(ValueError, match='x has 5 examples but y has 3'):
    jmeta.check_task(bad)


def test_single_task_where_a_meta_batch_is_expected():
  task = regression_task(jax.random.PRNGKey(0))
  learner = jmeta.maml(mlp_apply)
  state = jmeta.init_state(learner, optax.adam(1e-3), jax.random.PRNGKey(0),
                           mlp_params(jax.random.PRNGKey(1)))
  step = jmeta.meta_step(learner, optax.adam(1e-3), task_spec=jmeta.task_spec(task))
  with pytest.raises(ValueError, match='leading task axis'):
    step(state, task)
  step(state, meta_batch(jax.random.PRNGKey(2), tasks=3, shots=5, queries=7))  # the right thing passes


def test_meta_batch_leaves_must_share_the_task_axis():
  batch = meta_batch(jax.random.PRNGKey(0), tasks=3)
  bad = batch._replace(query=jmeta.Split(batch.query.x[:2], batch.query.y[:2]))
  with pytest.raises(ValueError, match='share a leading task axis'):
    jmeta.check_meta_batch(bad)


@pytest.mark.parametrize('lr', [-0.1, 0.0, math.nan, math.inf, 'fast'])
def test_bad_learning_rates(lr):
  with pytest.raises(ValueError, match='positive finite number'):
    jmeta.maml(mlp_apply, inner_opt=lr)
  with pytest.raises(ValueError, match='positive finite number'):
    jmeta.reptile(mlp_apply, inner_opt=lr)
  with pytest.raises(ValueError, match='positive finite number'):
    jmeta.metasgd(mlp_apply, lr_init=lr)


@pytest.mark.parametrize('make', [jmeta.maml, jmeta.fomaml, jmeta.metasgd, jmeta.reptile,
                                  lambda f, steps: jmeta.anil(f, jmeta.path_mask('head'), steps=steps)])
def test_zero_inner_steps_where_the_algorithm_needs_one(make):
  with pytest.raises(ValueError, match=r'steps .*must be an integer >= 1; got 0'):
    make(mlp_apply, steps=0)


def test_zero_steps_is_allowed_when_evaluating_an_adapted_model():
  params = mlp_params(jax.random.PRNGKey(0))
  task = regression_task(jax.random.PRNGKey(1))
  adapted = jmeta.maml(mlp_apply, 0.1, 1).adapt(params, task.support, steps=0)
  jax.tree.map(lambda a, b: (a == b).all() or pytest.fail('steps=0 must return the params'), adapted, params)


def test_mask_that_selects_nothing_or_has_the_wrong_structure():
  params = mlp_params(jax.random.PRNGKey(0))
  task = regression_task(jax.random.PRNGKey(1))
  with pytest.raises(ValueError, match='selects no parameter'):
    jmeta.anil(mlp_apply, jmeta.path_mask('no_such_layer')).adapt(params, task.support)
  with pytest.raises(ValueError, match='structure of the params'):
    jmeta.anil(mlp_apply, {'head': True}).adapt(params, task.support)
  with pytest.raises(ValueError, match='needs a mask'):
    jmeta.anil(mlp_apply, None)


def test_sinusoid_sampler_arguments():
  with pytest.raises(ValueError, match='shots must be an integer >= 1'):
    jmeta.datasets.sinusoid(0)
  with pytest.raises(ValueError, match='amplitude must be a'):
    jmeta.datasets.sinusoid(5, amplitude=(5.0, 0.1))
