"""External memory (jmeta.nn.memory) against NumPy loops written from the papers' equations."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmeta.nn import memory as mem

GAMMA = 0.95



def _norm(v):
  return np.sqrt(np.sum(v ** 2) + mem.EPS ** 2)


def np_lrua_step(M, w_r, w_u, keys, gates, gamma, strengths):
  """Santoro et al. (2016), eqs. 3-8, slot by slot; head h's least-used slot is the h-th least used."""
  heads, slots = w_r.shape
  order = sorted(range(slots), key=lambda i: (w_u[i], i))
  w_lu = np.zeros((heads, slots))
  for h in range(heads):
    w_lu[h, order[h]] = 1.0
  sigma = 1.0 / (1.0 + np.exp(-gates))
  w_w = np.array([[sigma[h] * w_r[h, i] + (1 - sigma[h]) * w_lu[h, i] for i in range(slots)] for h in range(heads)])
  M = M.copy()
  for i in range(slots):
    if w_lu[:, i].sum() > 0:
      M[i] = 0.0
  for i in range(slots):
    for h in range(heads):
      M[i] = M[i] + w_w[h, i] * keys[h]
  new_r = np.zeros((heads, slots))
  for h in range(heads):
    sims = [keys[h] @ M[i] / (_norm(keys[h]) * _norm(M[i])) for i in range(slots)]
    e = np.exp(strengths[h] * np.array(sims))
    new_r[h] = e / e.sum()
  w_u = gamma * w_u + new_r.sum(0) + w_w.sum(0)
  reads = np.array([sum(new_r[h, i] * M[i] for i in range(slots)) for h in range(heads)])
  return M, new_r, w_w, w_u, reads


@pytest.mark.parametrize('heads', [1, 2])
def test_lrua_steps_equal_the_papers_equations_and_weights_sum_as_they_say(heads):
  slots, width, steps = 5, 3, 6
  rng = np.random.default_rng(heads)
  keys = rng.normal(size=(steps, heads, width))
  gates = rng.normal(size=(steps, heads))
  strengths = rng.uniform(0.5, 3.0, size=(steps, heads))
  with jax.enable_x64():
    state = mem.initial_state(slots, width, heads, dtype=jnp.float64)
    M, w_r, w_u = np.asarray(state.memory), np.asarray(state.read_weights), np.asarray(state.usage)
    lrua_step = jax.jit(lambda state, keys, gates, strengths: mem.lrua_step(state, keys, gates, GAMMA, strengths))
    for t in range(steps):
      previous_usage = np.asarray(state.usage)
      state, reads = lrua_step(state, keys[t], gates[t], strengths[t])
      state, reads = jax.tree.map(np.asarray, (state, reads))
      M, w_r, w_w, w_u, np_reads = np_lrua_step(M, w_r, w_u, keys[t], gates[t], GAMMA, strengths[t])
      for got, want in [(state.memory, M), (state.read_weights, w_r), (state.write_weights, w_w),
                        (state.usage, w_u), (reads, np_reads)]:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
      # each head's read and write weights sum to one, so usage grows by 2 * heads after its decay
      np.testing.assert_allclose(np.sum(state.write_weights, -1), np.ones(heads), rtol=1e-12)
      np.testing.assert_allclose(np.sum(state.read_weights, -1), np.ones(heads), rtol=1e-12)
      np.testing.assert_allclose(np.sum(state.usage), GAMMA * np.sum(previous_usage) + 2 * heads, rtol=1e-12)


def test_least_used_picks_the_smallest_usages_in_slot_order_on_ties():
  usage = jnp.array([0.5, 0.1, 0.3, 0.1, 0.9])
  np.testing.assert_array_equal(mem.least_used(usage, 3), np.eye(5)[[1, 3, 2]])


def test_lrua_hand_computed_first_write():
  """One head, gate logit 0 (sigma = 1/2): the first write goes half to slot 0 (read before) and half to the
  least-used slot, also slot 0 (all usages tie at zero), which is erased first: M[0] = 0 + 1 * k; the read
  weights are the softmax of the cosine similarities to [k, fill, fill]."""
  with jax.enable_x64():
    state = mem.initial_state(3, 2, 1, dtype=jnp.float64)
    state, reads = jax.jit(mem.lrua_step, static_argnums=3)(state, np.array([[3.0, 4.0]]), np.zeros(1), GAMMA)
  np.testing.assert_allclose(state.memory, [[3.0, 4.0], [1e-6, 1e-6], [1e-6, 1e-6]], rtol=1e-12)
  tiny = 7e-6 / (5 * np.sqrt(2 * 1e-12 + mem.EPS ** 2))  # k . (1e-6, 1e-6) / (|k| |M[i]|)
  cos = np.array([25 / (5 * np.sqrt(25 + mem.EPS ** 2)), tiny, tiny])
  np.testing.assert_allclose(state.read_weights[0], np.exp(cos) / np.exp(cos).sum(), rtol=1e-12)
  np.testing.assert_allclose(state.usage, np.asarray(state.read_weights[0]) + [1.0, 0.0, 0.0], rtol=1e-12)
  np.testing.assert_allclose(reads, np.asarray(state.read_weights) @ np.asarray(state.memory), rtol=1e-12)


def np_ntm_address(previous, M, key, beta, g, shift, gamma):
  """Graves et al. (2014), eqs. 5-9, one head, slot by slot."""
  n = M.shape[0]
  sims = np.array([key @ M[i] / (_norm(key) * _norm(M[i])) for i in range(n)])
  wc = np.exp(beta * sims) / np.exp(beta * sims).sum()
  wg = g * wc + (1 - g) * previous
  radius = len(shift) // 2
  wt = np.array([sum(wg[j] * shift[radius + d] for j in range(n) for d in range(-radius, radius + 1)
                     if (j + d) % n == i) for i in range(n)])
  ws = (wt + mem.EPS) ** gamma
  return ws / ws.sum()


def test_ntm_addressing_and_write_equal_the_papers_equations():
  rng = np.random.default_rng(0)
  slots, width, heads = 6, 4, 2
  with jax.enable_x64():
    M = rng.normal(size=(slots, width))
    previous = rng.dirichlet(np.ones(slots), size=heads)
    head = mem.NTMHead(keys=rng.normal(size=(heads, width)), strengths=rng.uniform(0, 5, heads),
                       gates=rng.uniform(0, 1, heads), shifts=rng.dirichlet(np.ones(3), size=heads),
                       sharpening=rng.uniform(1, 3, heads))
    head = mem.NTMHead(*map(jnp.asarray, head))
    weights = np.asarray(jax.jit(mem.ntm_address)(head, previous, M))
    for h in range(heads):
      want = np_ntm_address(previous[h], M, *(np.asarray(a[h]) for a in head))
      np.testing.assert_allclose(weights[h], want, rtol=1e-12)
    erase, add = rng.uniform(0, 1, (heads, width)), rng.normal(size=(heads, width))
    new = np.asarray(jax.jit(mem.ntm_write)(M, weights, erase, add))
  want = M.copy()
  for h in range(heads):  # erase with every head, then add with every head (eqs. 3-4)
    want = want * (1 - weights[h][:, None] * erase[h][None, :])
  for h in range(heads):
    want = want + weights[h][:, None] * add[h][None, :]
  np.testing.assert_allclose(new, want, rtol=1e-12)


def test_ntm_shift_moves_a_focused_head_by_one_slot():
  """Gate 0 keeps the previous focus (slot 2); all shift mass on +1 moves it to slot 3; sharpening keeps it."""
  head = mem.NTMHead(keys=jnp.ones((1, 2)), strengths=jnp.ones(1), gates=jnp.zeros(1),
                     shifts=jnp.array([[0.0, 0.0, 1.0]]), sharpening=jnp.array([2.0]))
  weights = jax.jit(mem.ntm_address)(head, np.eye(5, dtype=np.float32)[[2]], np.ones((5, 2), np.float32))
  np.testing.assert_allclose(weights, np.eye(5)[[3]], atol=1e-6)


def _sequence_loss(module, params, hidden, targets):
  """Runs the memory over `hidden [steps, features]` in `lax.scan`; squared error of the reads."""

  def step(state, h):
    state, reads = module.apply(params, state, h)
    return state, reads

  _, reads = jax.lax.scan(step, module.initial_state(hidden.dtype), hidden)
  return jnp.sum((reads - targets) ** 2), reads


@pytest.mark.parametrize('module', [mem.LRUAMemory(slots=4, width=3, heads=2, learn_strength=True),
                                    mem.NTMMemory(slots=4, width=3, read_heads=2, write_heads=1)],
                         ids=['lrua', 'ntm'])
def test_scan_equals_a_python_loop_and_gradients_match_float64_finite_differences(module):
  with jax.enable_x64():
    rng = np.random.default_rng(1)
    steps, features = 5, 3
    hidden = rng.normal(size=(steps, features))
    params = jax.jit(module.init)(jax.random.PRNGKey(0), module.initial_state(jnp.float64), hidden[0])
    params = jax.tree.map(lambda p: np.asarray(p, np.float64), params)
    reads_width = module.width * (module.heads if isinstance(module, mem.LRUAMemory) else module.read_heads)
    targets = rng.normal(size=(steps, reads_width))

    direction = jax.tree.map(lambda p: rng.normal(size=p.shape), params)
    loss_fn = lambda p: _sequence_loss(module, p, hidden, targets)

    @jax.jit  # the scan's reads, its gradient and the central differences along `direction` in one program
    def reads_gradient_and_differences(p, direction, steps):
      (_, reads), grads = jax.value_and_grad(loss_fn, has_aux=True)(p)
      shifted = lambda e: loss_fn(jax.tree.map(lambda q, d: q + e * d, p, direction))[0]
      return reads, grads, jax.vmap(lambda e: (shifted(e) - shifted(-e)) / (2 * e))(steps)

    # central differences: the error falls as eps^2 until rounding takes over
    reads, grads, differences = reads_gradient_and_differences(params, direction, np.array([1e-3, 1e-4, 1e-5]))
    state, loop_reads = module.initial_state(jnp.float64), []
    step = jax.jit(module.apply)
    for t in range(steps):
      state, r = step(params, state, hidden[t])
      loop_reads.append(r)
    np.testing.assert_allclose(reads, np.stack(loop_reads), rtol=1e-12)

    analytic = sum(np.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
    errors = [abs(float(d) - analytic) / abs(analytic) for d in differences]
    assert min(errors) < 1e-7, errors


def test_a_zero_key_has_a_finite_gradient():
  """At an episode's first step an LSTM controller with zero state and zero input emits a zero key."""
  f = lambda k: jnp.sum(mem.content_weights(k, jnp.ones(1), jnp.eye(3, 2)) * jnp.arange(3.0))
  grad = jax.jit(jax.grad(f))(np.zeros((1, 2), np.float32))  # one program, not one per op
  assert np.all(np.isfinite(grad)), grad


def test_a_memory_without_slots_or_with_mismatched_heads_is_refused():
  with pytest.raises(ValueError, match='slots'):
    mem.initial_state(0, 4)
  with pytest.raises(ValueError, match='2 heads of keys, but the state has 1 read'):
    mem.lrua_step(mem.initial_state(4, 3, 1), jnp.ones((2, 3)), jnp.zeros(2), GAMMA)
