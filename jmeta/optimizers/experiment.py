"""`jmeta train --algo learned-opt`: a learned optimizer meta-trained on the registry's datasets.

A `jmeta.Task` is an optimization problem: the dataset's predictor, started from weights drawn with a key hashed
from the support set (`data_key`), is trained on the support set by the learned optimizer (`lstm_optimizer` or
`mlp_optimizer`, whose meta-parameters are the run's parameters). `loss(params, task)` is the mean training loss
over the `inner_steps` steps of the unroll (Andrychowicz et al., 2016, weights w_t = 1), differentiated through
the unroll with the optimizee's second derivatives dropped, as the paper does. `adapt(params, support, steps=S)` is
the trained model after S steps, so `jmeta eval` scores the dataset's metric after `eval_inner_steps` steps.

Datasets registered here: `quadratic` (Andrychowicz et al.'s 10-d `||W theta - y||^2`, as least squares: support x
= W, y = y, the predictor `x @ theta`, no query beyond the support) and `digits` (an MLP on scikit-learn's 8x8
digits, labels permuted per task, support and query sets drawn from the 1,797 images). The persistent meta-trainers
of `jmeta.optimizers.training` (truncations that carry the inner state on, PES) run in
`benchmarks/learned_optimizers.py`; the registry's meta-step is stateless, one unroll per task.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jmeta import losses
from jmeta.algorithms.neural_process import data_key
from jmeta.base import MetaLearner
from jmeta.checks import check_positive_int
from jmeta.experiments import Algorithm, Data, Dataset, Option, Recipe, register_algorithm, register_dataset
from jmeta.models.conv4 import Functional
from jmeta.optimizers.learned import init_lstm_meta_params, init_mlp_meta_params, lstm_optimizer, mlp_optimizer
from jmeta.tasks import Split, Task, check_task

DESIGNS = ('lstm', 'mlp')


def make_optimizer(design: str):
  """`meta_params -> optax transformation` and `key -> meta_params` for 'lstm' or 'mlp'."""
  if design == 'lstm':
    return lstm_optimizer, init_lstm_meta_params
  if design == 'mlp':
    return mlp_optimizer, init_mlp_meta_params
  raise ValueError(f'unknown learned optimizer {design!r}; expected one of {", ".join(DESIGNS)}')


def learned_opt(init_model, apply_fn, design: str = 'lstm', steps: int = 20, *, loss_fn=losses.mse,
                metrics_fn=None, second_order: bool = False) -> MetaLearner:
  """A MetaLearner whose parameters are a learned optimizer's: each task trains `apply_fn`'s model from
  `init_model(data_key(support))` on the support set for `steps` steps of the learned optimizer.

  Args:
    init_model: `key -> model params`.
    apply_fn: `(params, x) -> predictions`.
    design: 'lstm' (`lstm_optimizer`) or 'mlp' (`mlp_optimizer`).
    steps: the unroll's length while meta-training; `adapt(..., steps=S)` overrides it.
    loss_fn: `(predictions, targets) -> scalar`, the training loss.
    metrics_fn: extra `(predictions, targets) -> {name: scalar}` on the query set.
    second_order: keep the optimizee's second derivatives (the paper drops them).
  """
  make, init_meta = make_optimizer(design)
  steps = check_positive_int(steps, 'steps')

  def run(params, support: Split, count: int):
    opt = make(params)
    model = init_model(data_key(support))
    train = lambda p: losses.masked(loss_fn)(apply_fn(p, support.x), support.y, support.mask)

    def step(carry, _):
      p, s = carry
      value, grads = jax.value_and_grad(train)(p)
      if not second_order:
        grads = jax.lax.stop_gradient(grads)
      updates, s = opt.update(grads, s, p)
      return (optax.apply_updates(p, updates), s), value

    (model, _), values = jax.lax.scan(step, (model, opt.init(model)), None, length=count)
    return model, values

  def adapt(params, support: Split, *, steps: int = steps):
    return run(params, support, steps)[0]

  def loss(params, task: Task):
    check_task(task)
    model, values = run(params, task.support, steps)
    predictions = apply_fn(model, task.query.x)
    query = losses.masked(loss_fn)(predictions, task.query.y, task.query.mask)
    metrics = {'loss': jnp.mean(values), 'final_loss': train_loss_after(model, task.support), 'query_loss': query}
    if metrics_fn is not None:
      metrics.update(losses.masked(metrics_fn)(predictions, task.query.y, task.query.mask))
    return jnp.mean(values), metrics

  def train_loss_after(model, support):
    return losses.masked(loss_fn)(apply_fn(model, support.x), support.y, support.mask)

  return MetaLearner(init=lambda key, model_params: init_meta(key), adapt=adapt, predict=apply_fn, loss=loss,
                     meta_grad=jax.grad(loss, has_aux=True))


# Datasets.

def quadratic_tasks(dim: int = 10):
  """`key -> Task`: `||W theta - y||^2` as least squares, support = query = `Split(W [dim, dim], y [dim, 1])`."""

  def sample(key):
    kw, ky = jax.random.split(key)
    split = Split(jax.random.normal(kw, (dim, dim)), jax.random.normal(ky, (dim, 1)))
    return Task(split, split)

  return sample


def sum_squares(predictions: jax.Array, targets: jax.Array) -> jax.Array:
  """`||predictions - targets||^2`: the quadratic's loss (a sum, as the paper's `f`)."""
  return jnp.sum(jnp.square(predictions - targets))


def _quadratic_load(c, data_dir=None):
  del data_dir
  dim = c.dim
  model = Functional(lambda key, x: jax.random.normal(key, (dim, 1)), lambda theta, x: x @ theta)

  def models(role):
    if role != 'predictor':
      raise ValueError(f'quadratic provides a predictor (x @ theta), not an {role} model')
    return model

  sample = quadratic_tasks(dim)
  return Data(sample, sample, sample, models, jnp.zeros((2, dim)), sum_squares, None, sum_squares, 'loss')


def digits_tasks(x: jax.Array, y: jax.Array, shots: int, queries: int):
  """`key -> Task`: `shots` and `queries` distinct images of `x [n, 64]`, labels `y` permuted per task."""

  def sample(key):
    k_perm, k_idx = jax.random.split(key)
    perm = jax.random.permutation(k_perm, 10)
    idx = jax.random.choice(k_idx, x.shape[0], (shots + queries,), replace=False)
    return Task(Split(x[idx[:shots]], perm[y[idx[:shots]]]), Split(x[idx[shots:]], perm[y[idx[shots:]]]))

  return sample


def _digits_load(c, data_dir=None):
  from jmeta.models.mlp import MLP
  from jmeta.optimizers.tasks import load_digits
  del data_dir
  x, y = load_digits()
  module = MLP(hidden=(c.hidden_units,), out=10)
  model = Functional(lambda key, example: module.init(key, example), module.apply)

  def models(role):
    if role != 'predictor':
      raise ValueError(f'digits provides a predictor (an MLP classifier), not an {role} model')
    return model

  train = digits_tasks(x, y, c.shots, c.queries)
  test = digits_tasks(x, y, c.shots, c.eval_queries)
  return Data(train, test, test, models, x[:2], losses.cross_entropy,
              lambda logits, labels: {'accuracy': losses.accuracy(logits, labels)}, losses.accuracy, 'accuracy')


register_dataset(Dataset(
    name='quadratic', kind='regression',
    summary="random quadratics ||W theta - y||^2, W, y, theta_0 N(0, 1) (Andrychowicz et al., 2016); metric: the "
    "loss after training, lower is better",
    options=(Option('dim', 'dimensions of theta (default 10, as the paper)'),),
    defaults=dict(dim=10), load=_quadratic_load))

register_dataset(Dataset(
    name='digits', kind='classification',
    summary="an MLP trained on scikit-learn's 8x8 digits, labels permuted per task (needs scikit-learn); metric: "
    "query accuracy after training",
    options=(Option('shots', 'training images per task (default 256)'),
             Option('queries', 'query images per task while training (default 256)'),
             Option('eval_queries', 'query images per test task (default 512)'),
             Option('hidden_units', 'hidden units of the MLP (default 32)')),
    defaults=dict(shots=256, queries=256, eval_queries=512, hidden_units=32), load=_digits_load))


def _build(c, data: Data) -> Recipe:
  model = data.model('predictor')
  init_model = lambda key: model.init(key, data.example_x)
  learner = learned_opt(init_model, model.apply, c.lopt, c.inner_steps, loss_fn=data.loss_fn,
                        metrics_fn=data.metrics_fn)
  return Recipe(init_model, learner, learner)


# Andrychowicz et al. (2016), section 3: Adam on the LSTM's parameters, unrolls of 20 steps (their truncation) and
# 100 steps at test on quadratics. The step size 1e-3 and the meta-batch are ours (not given in the paper). The MLP
# optimizer's settings are ours too; learned_optimization trains it with PES on far longer unrolls.
_PUBLISHED = {
    'quadratic': dict(lopt='lstm', inner_steps=20, eval_inner_steps=100, meta_batch=16, steps=2_000, outer_opt='adam',
                      outer_lr=1e-3, outer_decay=False, log_every=100, valid_episodes=100),
    'digits': dict(lopt='mlp', inner_steps=20, eval_inner_steps=100, meta_batch=8, steps=1_000, outer_opt='adam',
                   outer_lr=1e-3, outer_decay=False, log_every=50, valid_episodes=50),
    'omniglot': dict(lopt='lstm', inner_steps=10, eval_inner_steps=20, meta_batch=4, steps=1_000, outer_opt='adam',
                     outer_lr=1e-3, outer_decay=False, filters=16, queries=5, log_every=50, valid_episodes=50),
}

register_algorithm(Algorithm(
    name='learned-opt', family='learned optimizer', title='learned optimizer',
    paper='Andrychowicz et al., 2016, arXiv:1606.04474; Metz et al., 2022, arXiv:2203.11860',
    options=(
        Option('lopt', 'the learned optimizer: lstm (Andrychowicz et al.) or mlp (learned_optimization) (default: '
               'published)', str, default='lstm', choices=DESIGNS),
        Option('inner_steps', 'steps of the unroll per task while meta-training (default: published)'),
        Option('eval_inner_steps', 'training steps per task at validation and test time (default: published)',
               minimum=0, default=lambda f: f['inner_steps']),
    ),
    published=_PUBLISHED, build=_build, grad_of_mean=True))
