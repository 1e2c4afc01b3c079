"""Operation handlers of the propagation engine, one module per operation family.

Each handler receives ``(session, func, name, args, kwargs, activations)``, returns the operation's value and
records what it did in the coverage report; :mod:`..table` says which handler serves which operation.
Operations that are linear or positively homogeneous of degree 1 in their activation inputs need no handler:
plain gradient × input already redistributes their relevance (:data:`..classify.LINEAR`).
"""
