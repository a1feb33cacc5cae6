"""Verifiable rewards beside the model: each verifier kind in its own file; work that can hang (math, regexes) runs in
a pool of worker processes killed at their deadline, untrusted code in a sandbox."""
