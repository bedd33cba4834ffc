#!/bin/sh
# Regenerates the shipped switchboard prompts (Mandarin "zh" and English "en") with espeak-ng
# and sox: 8 kHz mono μ-law WAV (8 kB per second). Operators replace them per group by putting
# files of the same names in the directory named by the group's switchboard.prompt_dir.
# Usage: sh generate.sh [output-directory]   (default: this directory)
set -eu
out=${1:-$(dirname "$0")}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

say() {  # say NAME VOICE TEXT
    espeak-ng -v "$2" -s 165 -w "$tmp/$1.wav" "$3"
    sox "$tmp/$1.wav" -r 8000 -c 1 -e u-law -b 8 "$out/$1.wav" norm -3
}

say main_zh cmn "您好，欢迎致电。销售部请按1，技术部请按2，拨分机请直接拨分机短号，人工服务请按9。"
say main_en en "Welcome. For sales press 1, for support press 2, to reach an extension dial its short number, for the operator press 9."
say closed_zh cmn "您好，现在是非工作时间。值班电话请按9，或稍后再拨。"
say closed_en en "Our office is closed. For the duty phone press 9, or call again during business hours."
say invalid_zh cmn "输入有误，请重新输入。"
say invalid_en en "Sorry, that is not a valid choice."
say connect_zh cmn "正在为您转接，请稍候。"
say connect_en en "Please hold while we connect you."
say unavailable_zh cmn "对不起，您拨打的分机暂时无人接听。"
say unavailable_en en "Sorry, nobody is available to take your call."
say goodbye_zh cmn "感谢您的来电，再见。"
say goodbye_en en "Thank you for calling. Goodbye."
# China ringback (YD/T 1970 / GB 16885: 450 Hz, 1 s on, 4 s off) for hunting.
sox -n -r 8000 -c 1 -e u-law -b 8 "$out/ringback.wav" synth 1 sine 450 vol 0.3 pad 0 4
