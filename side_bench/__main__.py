from side_bench.cli import main

main()
