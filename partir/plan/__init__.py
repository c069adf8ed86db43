"""What a plan is and what it answers: the `Plan`, its history, collectives, checks,
comparisons and conflict kinds, and the `Program` a function is traced into."""
