"""Read one column of a Parquet file with pyarrow.

usage: read_parquet.py FILE COLUMN

Prints the column's values as one JSON array, sorted, so a test can compare
what CROW exported with what it expected.
"""
import json
import sys

import pyarrow.parquet as pq


def main():
    path, column = sys.argv[1], sys.argv[2]
    values = pq.read_table(path, columns=[column]).column(column).to_pylist()
    print(json.dumps(sorted(values)))


if __name__ == "__main__":
    main()
