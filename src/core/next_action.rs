//! The next-action state machine: the earlier version's rules, order and exact texts, with piv's declared deviations.
