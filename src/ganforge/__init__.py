import os

__version__ = "0.1.0"

# OpenMP threads (torch's intra-op pool, GNU libgomp) that wait for the next parallel region sleep
# instead of spinning. On cores that other processes keep busy, a spinning thread burns the time
# slice its team-mate needs to finish, and every op waits for the slowest thread: pinned to 2
# threads beside other work, a tf-dcgan step ran 0.53x TensorFlow's speed with spinning and 0.89x
# with sleeping threads (docs/BENCHMARKS.md). libgomp reads this once, when torch is first
# imported, so it acts when ganforge is imported first (the CLI always is); a value the user set
# is kept (OMP_WAIT_POLICY=ACTIVE brings spinning back).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
