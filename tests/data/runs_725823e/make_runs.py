"""Run directories saved by jmeta at 725823e (before the registry): config.json + one checkpoint of the initial
state (random init, nothing learned from any data), and the score `jmeta eval` gave then."""
import json, os
from jmeta import cli, recipes
from jmeta.training import Checkpoints
RUNS = {
  'protonet-omniglot': recipes.Config('protonet', 'omniglot', filters=8, train_ways=5, queries=5, steps=20),
  'matching-omniglot': recipes.Config('matching', 'omniglot', filters=8, queries=5, steps=20),
  'relation-omniglot': recipes.Config('relation', 'omniglot', filters=8, steps=20),
  'siamese-omniglot': recipes.Config('siamese', 'omniglot', filters=8, steps=20),
  'maml-omniglot': recipes.Config('maml', 'omniglot', filters=8, meta_batch=2, steps=20, eval_inner_steps=2),
  'metasgd-omniglot': recipes.Config('metasgd', 'omniglot', filters=8, shots=5, split='lake', steps=20),
  'reptile-omniglot': recipes.Config('reptile', 'omniglot', filters=8, ways=3, steps=20, eval_inner_steps=3),
  'anil-sinusoid': recipes.Config('anil', steps=20, shots=5),
  'pretrained-sinusoid': recipes.Config('pretrained', steps=20),
}
scores = {}
for name, config in RUNS.items():
  exp = recipes.build(config)
  os.makedirs(name)
  with open(os.path.join(name, 'config.json'), 'w') as f:
    json.dump(exp.config.to_json(), f, indent=2)
  state = cli._initial_state(exp, recipes.keys(exp.config.seed))
  ck = Checkpoints(os.path.join(name, 'checkpoints')); ck.save(state); ck.wait(); ck.close()
  scores[name] = cli.main(['eval', name, '--episodes', '20'])
  if name == 'protonet-omniglot':
    scores[name + ' --ways 10'] = cli.main(['eval', name, '--episodes', '20', '--ways', '10'])
  if name == 'maml-omniglot':
    scores[name + ' --inner-steps 0'] = cli.main(['eval', name, '--episodes', '20', '--inner-steps', '0'])
json.dump(scores, open('scores.json', 'w'), indent=1)
