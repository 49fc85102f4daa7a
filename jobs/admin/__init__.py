"""Operations for admins: queues, dead letters, workers, statistics, pruning."""
