"""Memory a member costs per epoch, training and recording (bpexp/training/population.py's constants).

    python benchmarks/record_memory.py [EPOCHS] [SEEDS]

Prints tracemalloc's peak over training a population, building its run's record and pickling
it for the recorder, per member and epoch, and the pickled record's size.
"""
import pickle
import sys
import tracemalloc

from bpexp.config.schema import TrainAppConfig
from bpexp.training.data import make_dataset
from bpexp.results.outcome import trial_outcome
from bpexp.training.population import Member, TrainSpec, train_population
from bpexp.recording.run_record import config_tree, run_record

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
data = make_dataset("sin", -5, 5, 20)
tracemalloc.start()
results = train_population([Member(4, "tanh", 0.01, 99 + i) for i in range(seeds)], data, TrainSpec(epochs))
trained = tracemalloc.get_traced_memory()[0]
record = run_record(config_tree(TrainAppConfig()), results, trial_outcome(results, "train_loss"), data, True)
pickled = len(pickle.dumps(record))
peak = tracemalloc.get_traced_memory()[1]
n = epochs * seeds
print(f"{seeds} members x {epochs} epochs: after training {trained / n:.0f} B, peak {peak / n:.0f} B, "
      f"pickled record {pickled / n:.0f} B per member-epoch")
