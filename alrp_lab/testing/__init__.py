"""Code for checking alrp-lab, not for training: the plain references that every fast path
is compared against (tests) and timed against (bench/). Nothing outside tests/ and bench/
imports it."""
