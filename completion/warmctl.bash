# bash completion for warmctl(1)                                      -*- shell-script -*-

_warmctl()
{
    local cur prev words cword
    _init_completion || return

    local commands="status drain undrain suspend resume inspect images cdi state lock checkpoint
        restore unlock lease metrics check version help"
    local common="--json --human --socket --help"

    case $prev in
        --socket)
            _filedir
            return
            ;;
        --image)
            _filedir img
            return
            ;;
        --output)
            _filedir json
            return
            ;;
        --shim)
            _filedir so
            return
            ;;
        --socket-dir)
            _filedir -d
            return
            ;;
        --timeout | --gpu | --gpu-map | --min-free-mib | --chunk-kib)
            return
            ;;
    esac

    # the command: the first word that is not an option or an option's value
    local i cmd=""
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --socket | --timeout) ((i++)) ;;
            -*) ;;
            *) cmd=${words[i]}; break ;;
        esac
    done

    if [[ -z $cmd ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "$common --timeout --version -V" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        fi
        return
    fi

    local opts=""
    case $cmd in
        status) opts="--wide --timeout" ;;
        drain) opts="--timeout --no-wait" ;;
        undrain | state | checkpoint | unlock | metrics | check | version) opts="--timeout" ;;
        suspend) opts="--timeout --image --dense --chunk-kib" ;;
        resume) opts="--gpu --gpu-map --image --timeout" ;;
        restore) opts="--gpu --gpu-map --timeout" ;;
        lock) opts="--timeout" ;;
        lease) opts="--gpu --min-free-mib --hold --timeout" ;;
        inspect) opts="--verify" ;;
        cdi) opts="--output --shim --socket-dir" ;;
        images) opts="--all --timeout" ;;
        help)
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
            return
            ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts $common" -- "$cur"))
        return
    fi
    case $cmd in
        inspect) _filedir ;;
        images)
            case $prev in
                images) COMPREPLY=($(compgen -W "list drop load" -- "$cur")) ;;
                load) _filedir img ;;
            esac
            ;;
        suspend | resume | state | lock | checkpoint | restore | unlock) _pids ;;
    esac
} &&
    complete -F _warmctl warmctl

# ex: filetype=sh
