"""Speed benchmarks of meta-steps: jmeta against PyTorch implementations of the same step (`jmeta bench`).

`cases` names the steps and their shapes; `jax_impl` and `torch_impl` build them; `timing` measures one
(case, implementation) pair; `run` runs each pair in a fresh process and writes the records. PyTorch is optional
(`pip install 'jmeta[bench]'`); without it only jmeta's implementations run.
"""
