"""Masked splits: padded tasks give the learners and the evaluator what the same tasks without the padding give."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmeta
from helpers import mlp_apply, mlp_params, regression_task
from jmeta.algorithms.protonet import protonet
from jmeta.tasks import Split, Task



def pad(split, extra, key):
  """`split` with `extra` rows of finite junk appended and a mask marking them."""
  kx, ky = jax.random.split(key)
  x = jnp.concatenate([split.x, 50 * jax.random.normal(kx, (extra, *split.x.shape[1:]))])
  y = jnp.concatenate([split.y, 50 * jax.random.normal(ky, (extra, *split.y.shape[1:]))])
  return Split(x, y, jnp.arange(len(x)) < len(split.x))


def padded(task, key, extra=(3, 4)):
  ks, kq = jax.random.split(key)
  return Task(pad(task.support, extra[0], ks), pad(task.query, extra[1], kq))


padded_now = jax.jit(padded, static_argnames='extra')
"""`padded` as one program, for a task made outside `jit` (`padded` itself is also a sampler traced in one)."""


def test_masked_mean_hand_case_trailing_axes_and_empty_mask():
  values = jnp.array([[1.0, 3.0], [2.0, 2.0], [6.0, 0.0], [100.0, 100.0]])
  mask = jnp.array([True, True, True, False])
  assert float(jmeta.losses.masked_mean(values, mask)) == pytest.approx((2 + 2 + 3) / 3)
  assert float(jmeta.losses.masked_mean(values, None)) == pytest.approx(values.mean())
  none = jnp.zeros(4, bool)
  assert float(jmeta.losses.masked_mean(values, none)) == 0.0
  assert not jnp.any(jax.grad(lambda v: jmeta.losses.masked_mean(v, none))(values))
  with pytest.raises(ValueError, match=r'mask must be \[examples\] = \[4\]; got \[3\]'):
    jmeta.losses.masked_mean(values, mask[:3])


def test_masked_losses_equal_the_losses_of_the_real_examples():
  key = jax.random.PRNGKey(0)
  logits, labels = jax.tree.map(np.asarray, jax.jit(lambda key: (jax.random.normal(key, (7, 5)),
                                                                 jax.random.randint(key, (7,), 0, 5)))(key))
  mask = jnp.array([True, False, True, True, False, True, False])
  rows = np.flatnonzero(mask)
  fns = {'ce': jmeta.losses.cross_entropy, 'acc': jmeta.losses.accuracy,
         'mse': lambda p, t: jmeta.losses.mse(p, jax.nn.one_hot(t, 5))}
  both = jmeta.losses.masked(lambda p, t: {name: fn(p, t) for name, fn in fns.items()})
  got, unmasked = jax.jit(lambda *a: (both(*a), both(*a[:2])))(logits, labels, mask)
  reference = jax.jit(lambda p, t: {name: fn(p, t) for name, fn in fns.items()})
  real, every = reference(logits[rows], labels[rows]), reference(logits, labels)
  for name in fns:
    np.testing.assert_allclose(got[name], real[name], rtol=1e-6)
    np.testing.assert_allclose(unmasked[name], every[name], rtol=1e-6)


def test_check_task_reads_masks_and_meta_batch_structure():
  task = jax.tree.map(np.asarray, padded_now(regression_task(jax.random.PRNGKey(0)), jax.random.PRNGKey(1)))
  jmeta.check_task(task)
  bad = task._replace(support=task.support._replace(mask=task.support.mask[:-1]))
  with pytest.raises(ValueError, match=r'task.support: mask must be bool \[examples\] = \[8\]; got bool \[7\]'):
    jmeta.check_task(bad)
  bad = task._replace(query=task.query._replace(mask=task.query.mask.astype(np.float32)))
  with pytest.raises(ValueError, match=r'task.query: mask must be bool .*got float32 \[11\]'):
    jmeta.check_task(bad)
  batch = jax.tree.map(lambda a: a[None], task)
  assert jmeta.check_meta_batch(batch, jmeta.task_spec(task)) == 1
  unmasked = Task(Split(task.support.x, task.support.y), Split(task.query.x, task.query.y))
  with pytest.raises(ValueError, match='differ in structure'):
    jmeta.check_meta_batch(batch, jmeta.task_spec(unmasked))


@pytest.mark.parametrize('name', ['maml', 'reptile', 'pretrained'])
def test_gradient_learners_on_padded_tasks_equal_the_unpadded_tasks(name):
  learner = {'maml': lambda: jmeta.maml(mlp_apply, 0.1, 1),
             'reptile': lambda: jmeta.reptile(mlp_apply, 0.1, 2, use_query=True),
             'pretrained': lambda: jmeta.pretrained(mlp_apply, 0.1, 2)}[name]()
  params = mlp_params(jax.random.PRNGKey(1))

  def outputs(task):
    return learner.adapt(params, task.support), learner.meta_grad(params, task)  # with the loss in its metrics

  # Tasks of different sizes, padded to one shape and batched: vmap over masks equals a loop over the real tasks.
  sizes = [(2, 7), (5, 1)]
  tasks = [regression_task(jax.random.PRNGKey(10 + i), shots=s, queries=q) for i, (s, q) in enumerate(sizes)]
  batch = jax.tree.map(lambda *a: np.stack(a), *[
      padded_now(t, jax.random.PRNGKey(20 + i), (5 - s, 7 - q)) for i, (t, (s, q)) in enumerate(zip(tasks, sizes))])
  got = jax.tree.map(np.asarray, jax.jit(jax.vmap(outputs))(batch))
  for i, task in enumerate(tasks):
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], got), jax.jit(outputs)(task), rtol=1e-5, atol=1e-6)


def test_evaluator_scores_padded_tasks_as_the_unpadded_ones():
  learner = jmeta.maml(mlp_apply, 0.05, 1)
  params = mlp_params(jax.random.PRNGKey(0))
  plain = lambda key: regression_task(key, shots=4, queries=6)
  key = jax.random.PRNGKey(3)
  got = jmeta.evaluator(learner, lambda k: padded(plain(k), jax.random.fold_in(k, 1)), jmeta.losses.mse,
                        batch_size=4)(params, key, 4)
  score = jax.jit(lambda task: jmeta.losses.mse(learner.predict(learner.adapt(params, task.support), task.query.x),
                                                  task.query.y))
  np.testing.assert_allclose(got, [score(plain(jax.random.fold_in(key, i))) for i in range(4)], rtol=1e-5)


def test_metric_learners_refuse_masked_splits():
  learner = protonet(lambda p, x: x, ways=2)
  support = Split(jnp.eye(4), jnp.array([0, 1, 0, 1]), jnp.array([True, True, True, False]))
  with pytest.raises(ValueError, match=r'protonet: support: a split with a mask \(padded examples\) is not supported'):
    learner.adapt({'embed': {}}, support)
