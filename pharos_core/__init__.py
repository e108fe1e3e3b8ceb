"""The small core every package shares: one clock (and, as it grows, one service lifecycle).

It sits below ``devices`` in the dependency rule: every package, the simulator included,
may import it, and it imports none of ours.
"""
