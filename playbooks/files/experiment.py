"""Deploy check: square numbers on the worker's CPUs and write the results."""

import json
import socket

from jobqueue import mapper


def square(x):
    return x * x


if __name__ == "__main__":
    xs = list(range(1000))
    ys = mapper.map(square, xs)
    with open("result.json", "w") as out:
        json.dump({"n": len(ys), "sum": sum(ys), "host": socket.gethostname()}, out)
    print("sum of squares:", sum(ys))
