"""Running a suite: the suite file validated and expanded into cells (suite), the cost of a run
before it starts (dryrun), the cells' stages (runner).
"""
