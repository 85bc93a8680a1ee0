"""Malicious client behaviours (targeted poisoning, backdoors, untargeted attacks).

The attack implementations arrive with the attacks issue; until then every node is benign and
the ClientApp's ``whoami`` reports the role from its node config (``role``, default
``benign``). `ROLES` is the set of roles a node config may declare.
"""

ROLES = ("benign", "malicious")
