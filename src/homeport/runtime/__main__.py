import sys

if len(sys.argv) == 3 and sys.argv[1] == "--template":
    from ._template import main as template_main

    template_main(int(sys.argv[2]))
else:
    from ._runtime import main

    main()
