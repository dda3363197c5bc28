import sys

if len(sys.argv) == 3 and sys.argv[1] == "--template":
    from ._template import main as template_main

    template_main(int(sys.argv[2]))
else:
    from ._spawned import isolate_if_asked

    isolate_if_asked()  # before anything of the user's runs
    from ._runtime import main

    main()
