"""``gym view``: a rollout viewer for RL (Flask), fast on files of any size.

``index`` finds and parses lines in the background; ``query`` filters, sorts, searches and
paginates; ``episode`` turns a line into what the rollout and compare pages show;
``summary`` and ``charts`` make the overview; ``app`` wires the Flask routes.
"""
