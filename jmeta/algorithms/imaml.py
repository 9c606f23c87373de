"""Implicit MAML (Rajeswaran, Finn, Kakade & Levine, 2019, arXiv:1909.04630).

The inner problem is regularised toward the meta-parameters, `phi* = argmin L_support(phi) + lam/2 ||phi - theta||^2`,
solved approximately by any optax transformation in a `lax.scan` (`jmeta.inner.inner_loop`). The meta-gradient
comes from the implicit function theorem at the solution: `dphi*/dtheta = (I + H/lam)^-1` with `H` the Hessian of the
support loss at `phi*`, so the task's meta-gradient is the solution `v` of `(I + H/lam) v = g`, `g` the query loss's
gradient at `phi*`. `conjugate_gradient` solves it in a fixed number of steps on Hessian-vector products
(`jax.jvp` of `jax.grad`), inside the backward rule of a `jax.custom_vjp`: nothing of the inner loop's path is kept
for the backward pass, so the memory of a meta-gradient does not grow with the inner steps
(`benchmarks/imaml.py --memory` measures it).

Why a `jax.custom_vjp` of our own rather than a library:
- jaxopt's `implicit_diff.custom_root` does the same from an optimality function (and its `solve_cg`), but PyPI
  says jaxopt is no longer maintained nor developed, and optax, which took over parts of it, has no implicit
  differentiation. Its successors, optimistix's `ImplicitAdjoint` over lineax's `CG`, bring equinox and lineax as
  dependencies for what is here about forty lines.
- `jax.scipy.sparse.linalg.cg` runs a `while_loop` to a tolerance and divides by `p^T A p` unguarded. iMAML takes a
  fixed number of CG steps (5 in the paper) and its inner loss is not convex, so `H` can have negative curvature:
  `conjugate_gradient` here is a `lax.scan` of exactly `steps` steps that stops moving once `p^T A p <= 0`.
Both take the same Hessian-vector products; the custom_vjp also returns the support set's exact cotangent.

Of the paper's Table 2 this is iMAML-GD (the inner problem solved by gradient steps, or any optax optimizer);
the Hessian-free inner solver of iMAML-HF (truncated Newton with a line search) is not implemented.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jmeta import losses
from jmeta.algorithms._gradient_based import (INNER_OPTIONS, SINUSOID_FINN2017, LossFn, MetricsFn, inner_optimizer,
                                              predictor_recipe, split_loss)
from jmeta.base import ApplyFn, MetaLearner, Metrics, Params, PyTree
from jmeta.checks import check_positive_int, check_positive_number
from jmeta.experiments import Algorithm, Option, Published, register_algorithm
from jmeta.inner import as_optimizer, inner_loop
from jmeta.tasks import Split, Task, check_task


def _vdot(a: PyTree, b: PyTree) -> jax.Array:
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _axpy(alpha: jax.Array, x: PyTree, y: PyTree) -> PyTree:
  """`alpha * x + y`, leafwise."""
  return jax.tree.map(lambda a, b: alpha * a + b, x, y)


def conjugate_gradient(matvec: Callable[[PyTree], PyTree], b: PyTree, steps: int,
                       x0: PyTree | None = None) -> PyTree:
  """`steps` steps of conjugate gradient on `A x = b` for a symmetric `A` given by `matvec`, over pytrees.

  A `lax.scan` of exactly `steps` steps (vmappable; exact after `n` steps for a positive definite `A` of size `n`).
  Where a direction has `p^T A p <= 0` (negative curvature of an indefinite `A`) or the residual is zero, `x` stops
  moving, as truncated CG does.

  Args:
    matvec: `x -> A x`, a pytree shaped like `b`.
    b: the right-hand side.
    steps: CG steps, an int >= 0 (0 returns `x0`).
    x0: the starting point (zeros when None).

  Returns:
    The approximate solution, shaped like `b`.
  """
  check_positive_int(steps, 'conjugate_gradient steps', minimum=0)
  x = jax.tree.map(jnp.zeros_like, b) if x0 is None else x0
  r = b if x0 is None else jax.tree.map(jnp.subtract, b, matvec(x0))
  rs = _vdot(r, r)

  def step(carry, _):
    x, r, p, rs = carry
    ap = matvec(p)
    pap = _vdot(p, ap)
    ok = (pap > 0) & (rs > 0)
    alpha = jnp.where(ok, rs / jnp.where(ok, pap, 1), 0)
    x = _axpy(alpha, p, x)
    r = _axpy(-alpha, ap, r)
    rs_new = _vdot(r, r)
    beta = jnp.where(ok, rs_new / jnp.where(ok, rs, 1), 0)
    return (x, r, _axpy(beta, p, r), rs_new), None

  (x, *_), _ = jax.lax.scan(step, (x, r, r, rs), None, length=steps)
  return x


def _check_damping(value, name: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
    raise ValueError(f'{name} must be a finite number >= 0; got {value!r}')
  return float(value)


def imaml(
    apply_fn: ApplyFn,
    inner_opt: optax.GradientTransformation | float = 0.1,
    steps: int = 16,
    *,
    lam: float = 2.0,
    cg_steps: int = 5,
    cg_damping: float = 0.0,
    lam_damping: float = 0.0,
    pull_back: bool = False,
    loss_fn: LossFn = losses.mse,
    metrics_fn: MetricsFn | None = None,
) -> MetaLearner:
  """Implicit MAML (Rajeswaran et al., 2019, arXiv:1909.04630), iMAML-GD of its Table 2.

  The meta-parameters are the model's initialisation `theta`. `adapt` takes `steps` steps of `inner_opt` from
  `theta` on `L_support(phi) + lam/2 ||phi - theta||^2`. The meta-gradient of a task is `v` from `cg_steps` steps of
  conjugate gradient on `((1 + cg_damping) I + H / (lam + lam_damping)) v = grad L_query(phi)`, `H` the support
  loss's Hessian at the adapted `phi`: the implicit gradient when both dampings are 0 and the inner problem is
  solved. The authors' code damps with `cg_damping = 1` and `lam_damping = 10`. Memory does not depend on `steps`.

  Args:
    apply_fn: `apply_fn(params, x) -> predictions` for `x: [examples, *input_shape]`.
    inner_opt: an optax transformation, or a step size for plain SGD.
    steps: inner steps during meta-training (>= 1); `adapt(..., steps=S)` overrides it.
    lam: the regularisation strength `lambda > 0`.
    cg_steps: conjugate gradient steps per meta-gradient (>= 1).
    cg_damping: `>= 0`, added to the identity of the linear system.
    lam_damping: `>= 0`, added to `lam` where it divides the Hessian (a weaker curvature term: with the
      non-convex support loss of a conv net, `I + H/lam` can be indefinite).
    pull_back: as the authors' code does (`examples/omniglot_implicit_maml.py`, "pull back for regularization"),
      take the `steps` inner steps on the support loss alone, then one step of `inner_opt` (fresh state) on the
      regulariser `lam/2 ||phi - theta||^2`: for SGD of step `a`, `phi <- phi - a lam (phi - theta)`. The
      meta-gradient is the same implicit one, at that `phi`.
    loss_fn: `(predictions, targets) -> scalar`, the support and query loss (a mean over examples if splits are
      masked).
    metrics_fn: extra `(predictions, targets) -> {name: scalar}` reported on the query set.
  """
  opt = as_optimizer(inner_opt)
  check_positive_int(steps, 'steps (inner steps during meta-training)')
  lam = check_positive_number(lam, 'lam (the regularisation strength lambda)')
  cg_steps = check_positive_int(cg_steps, 'cg_steps (conjugate gradient steps)')
  cg_damping = _check_damping(cg_damping, 'cg_damping')
  lam_damping = _check_damping(lam_damping, 'lam_damping')

  def support_loss(phi: Params, support: Split) -> jax.Array:
    return split_loss(apply_fn, loss_fn, phi, support)

  def penalty(phi: Params, theta: Params) -> jax.Array:
    diff = jax.tree.map(jnp.subtract, phi, theta)
    return 0.5 * lam * _vdot(diff, diff)

  def solve(num_steps: int, theta: Params, support: Split) -> Params:
    if not pull_back:
      return inner_loop(lambda p: support_loss(p, support) + penalty(p, theta), theta, opt, num_steps)[0]
    phi = inner_loop(lambda p: support_loss(p, support), theta, opt, num_steps)[0]
    return inner_loop(lambda p: penalty(p, theta), phi, opt, 1)[0]

  @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
  def solution(num_steps: int, theta: Params, support: Split) -> Params:
    return solve(num_steps, theta, support)

  def solution_fwd(num_steps, theta, support):
    phi = solve(num_steps, theta, support)
    return phi, (phi, support)

  def solution_bwd(num_steps, residuals, g):
    phi, support = residuals
    grad = jax.grad(support_loss)
    matvec = lambda v: _axpy(1 / (lam + lam_damping), jax.jvp(lambda p: grad(p, support), (phi,), (v,))[1],
                             jax.tree.map(lambda a: (1 + cg_damping) * a, v))
    v = conjugate_gradient(matvec, g, cg_steps)
    # The optimality condition grad L(phi, s) + lam (phi - theta) = 0 also moves phi with the support set s.
    _, vjp_support = jax.vjp(lambda s: grad(phi, s), support)
    (support_cotangent,) = vjp_support(jax.tree.map(lambda a: -a / lam, v))
    return v, support_cotangent

  solution.defvjp(solution_fwd, solution_bwd)

  def adapt(params: Params, support: Split, *, steps: int = steps) -> Params:
    """The regularised inner solution after `steps` steps on `support` (any `steps >= 0`), implicitly
    differentiable in `params`."""
    check_positive_int(steps, 'steps (inner steps)', minimum=0)
    return solution(steps, params, support)

  def loss(params: Params, task: Task) -> tuple[jax.Array, Metrics]:
    check_task(task)
    fast = solution(steps, params, task.support)
    predictions = apply_fn(fast, task.query.x)
    query_loss = losses.masked(loss_fn)(predictions, task.query.y, task.query.mask)
    metrics = {'loss': query_loss,
               'support_loss': jax.lax.stop_gradient(support_loss(params, task.support))}
    if metrics_fn is not None:
      metrics.update(losses.masked(metrics_fn)(predictions, task.query.y, task.query.mask))
    return query_loss, metrics

  return MetaLearner(init=lambda key, model_params: model_params, adapt=adapt, predict=apply_fn, loss=loss,
                     meta_grad=jax.grad(loss, has_aux=True))


OPTIONS = INNER_OPTIONS + (
    Option('lam', 'regularisation strength lambda of the inner problem (default: published)', float),
    Option('cg_steps', 'conjugate gradient steps per meta-gradient (default: published)'),
    Option('cg_damping', 'damping added to the identity of the CG system, >= 0 (default: published)', float,
           validate=_check_damping),
    Option('lam_damping', 'added to lambda where it divides the Hessian in the CG system, >= 0 (default: published)',
           float, validate=_check_damping),
    Option('pull_back', 'inner steps on the support loss alone, then one step toward the meta-parameters (the '
           "authors' code)", bool, default=False, false_flag='--no-pull-back'),
)

# Rajeswaran et al. (2019), section 5.2 (Table 2's caption): iMAML-GD takes 16 inner gradient steps at 5 ways and 25
# at 20 ways, lambda = 2 and 5 CG steps, Adam outside. The authors' code (github.com/aravindr93/imaml_dev,
# examples/README.md) gives the rest for 5-way 1-shot: inner SGD 0.1, Adam 1e-3, 32 tasks a meta-batch, K query
# examples per class, at least 20,000 meta-steps, cg_damping 1.0 and 16 steps at test time. Its CG matrix is
# (1 + cg_damping) I + H / (lam + lam_damping) with lam_damping = 10 (implicit_maml/learner_model.py,
# matrix_evaluator), a constant of its code, not of the paper: with lam_damping = 0 our 5-way 1-shot run diverged
# (README, "iMAML"). Its inner loop takes the 16 steps on the support loss alone and then one step toward theta
# ("pull back for regularization", examples/omniglot_implicit_maml.py): pull_back.
OMNIGLOT_RAJESWARAN2019 = dict(
    meta_batch=32, steps=20_000, inner_steps=lambda f: 16 if f['ways'] <= 5 else 25,
    eval_inner_steps=lambda f: 16 if f['ways'] <= 5 else 25, inner_lr=0.1, inner_opt='sgd', lam=2.0, cg_steps=5,
    cg_damping=1.0, lam_damping=10.0, pull_back=True, outer_lr=1e-3, outer_opt='adam', outer_decay=False,
    queries=lambda f: f['shots'])
# The paper has no sinusoid experiment: Finn et al.'s (2017) budget and inner SGD 0.01 (section 5.1) with the
# Omniglot settings of iMAML above (16 inner steps, lambda 2, 5 CG steps, the authors' code's dampings).
SINUSOID_RAJESWARAN2019 = {**SINUSOID_FINN2017, 'inner_steps': 16, 'lam': 2.0, 'cg_steps': 5, 'cg_damping': 1.0,
                           'lam_damping': 10.0}

register_algorithm(Algorithm(
    name='imaml', family='gradient-based', title='iMAML',
    paper='Rajeswaran, Finn, Kakade & Levine, 2019, arXiv:1909.04630', options=OPTIONS,
    published={'sinusoid': SINUSOID_RAJESWARAN2019, 'omniglot': OMNIGLOT_RAJESWARAN2019},
    build=predictor_recipe(lambda c, apply_fn, loss_fn, metrics_fn: imaml(
        apply_fn, inner_optimizer(c), c.inner_steps, lam=c.lam, cg_steps=c.cg_steps, cg_damping=c.cg_damping,
        lam_damping=c.lam_damping, pull_back=c.pull_back, loss_fn=loss_fn, metrics_fn=metrics_fn)),
    fixed_ways=True,
    results=tuple(
        # Rajeswaran et al. (2019), Table 2, iMAML-GD.
        Published('omniglot', {'ways': w, 'shots': k}, 'accuracy %', v, 'Rajeswaran et al. (2019), table 2')
        for (w, k), v in (((5, 1), 99.16), ((5, 5), 99.67), ((20, 1), 94.46), ((20, 5), 98.69)))))
