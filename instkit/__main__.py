from instkit.cli import main

main()
